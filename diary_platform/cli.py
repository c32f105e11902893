"""The `diary` command: process recordings now, open the UI."""

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from diary_platform.settings import Settings

app = typer.Typer(
    help="Spoken diary: voice recordings in, transcripts and diary notes out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOT_RECORDINGS = {".md", ".txt", ".json", ".jsonl", ".license"}
T = TypeVar("T")


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given, and every entry under folders (but hidden files and notes), links never followed:
    what is not a regular file is reported as skipped with its reason, not read."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for folder, subfolders, names in os.walk(path):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and not Path(folder, d).is_symlink())
                files.extend(
                    Path(folder, name)
                    for name in sorted(names)
                    if not name.startswith(".") and Path(name).suffix.lower() not in NOT_RECORDINGS
                )
        elif os.path.lexists(path):
            files.append(path)
        else:
            raise typer.BadParameter(f"{path} does not exist")
    return files


def _until_stopped(work: Callable[[], T], instance) -> T:
    """Run `work` in a worker thread, so that SIGTERM or Ctrl-C reach this thread at once, whatever the work
    is in the middle of (a model call, a decode): the decode workers are killed, this process's runs are
    marked failed in the instance, and the process exits within a second. What it was doing is resumed by
    the next `diary run` with the same files, or `diary recover`."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the main thread, which raises it
            outcome["error"] = error

    def stop(signum: int, _frame) -> None:
        from diary_platform.batch.recovery import fail_runs_of_this_process
        from diary_platform.domain.audio.sandbox import stop_all_workers

        console.print(f"\nstopping ({signal.Signals(signum).name}): the unfinished batch is resumed by the next `diary run` or `diary recover`")
        stop_all_workers()
        fail_runs_of_this_process(instance, f"stopped by {signal.Signals(signum).name}; the batch is resumable")
        os._exit(128 + signum)

    worker = threading.Thread(target=target, name="diary-run", daemon=True)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@app.command()
def run(
    paths: list[Path] = typer.Argument(None, help="Files or folders to process (default: the bundled examples)."),
    user: str = typer.Option("default", help="Whose diary these recordings belong to."),
    data_dir: Path = typer.Option(None, help="Data folder (default: $DIARY_DATA_DIR or ./data)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per recording."),
) -> None:
    """Ingest files through the whole asset graph in this process and say where each result is; batches a
    killed run left behind with some of these files are resumed."""
    from diary_platform.runner import dagster_instance, process_files

    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    files = _expand(paths or [EXAMPLES])
    instance = dagster_instance(settings)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"hashing {len(files)} files", total=len(files))

        def on_batch(key: str, count: int) -> None:
            progress.update(task, description=f"batch {key}: {count} recordings")

        def on_done(count: int) -> None:
            progress.advance(task, count)

        report = _until_stopped(lambda: process_files(files, user, settings, instance, on_batch=on_batch, on_done=on_done), instance)
    _print_report(report, as_json)


@app.command()
def recover(
    days: int = typer.Option(7, help="Look at batches made in this many past days."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per recording."),
) -> None:
    """Resume every batch a crash, a kill or a pre-emption left half done (not done, no live run or owner)."""
    from diary_platform.runner import dagster_instance, recover as recover_batches

    settings = Settings()
    instance = dagster_instance(settings)
    since = datetime.now(timezone.utc) - timedelta(days=days)
    _print_report(_until_stopped(lambda: recover_batches(settings, instance, since), instance), as_json)


ORIGIN_WORDS = {"known": "already ingested", "retranscribed": "transcribed again", "elsewhere": "being processed by another process", "skipped": "skipped"}


def _print_report(report, as_json: bool) -> None:
    out = Console(soft_wrap=True)
    for result in report.results:
        if as_json:
            print(json.dumps(asdict(result), ensure_ascii=False))
            continue
        status = result.status if result.new else ORIGIN_WORDS[result.origin]
        if result.origin in ("known", "elsewhere"):
            status += f" (batch {result.batch_key})"
        if result.origin == "resumed":
            status = f"resumed (batch {result.batch_key}): {status}"
        if result.reason:
            status += f" [{result.reason}] {result.message}"
        elif result.status == "pending":
            status += f": {result.message}"
        elif result.warnings:
            status += f" (warnings: {', '.join(result.warnings)})"
        out.print(f"[bold]{escape(Path(result.file).name)}[/bold]  {result.recording_id}  {escape(status)}")
        if result.transcript_path:
            out.print(f"  transcript: {escape(result.transcript_path)}")
        if result.note_path:
            out.print(f"  note:       {escape(result.note_path)}")
    quarantined = sum(1 for r in report.new if r.status == "quarantined")
    pending = sum(1 for r in report.new if r.status == "pending")
    extra = "".join(
        f", {report.count(origin)} {words}"
        for origin, words in (("resumed", "resumed"), ("elsewhere", "in progress elsewhere"), ("skipped", "skipped"))
        if report.count(origin)
    )
    speed = f"speed {report.speed:.1f}x real time" if report.audio_seconds else "nothing new to transcribe"
    summary = (
        f"recordings: {report.count('new')} new ({quarantined} quarantined{f', {pending} notes waiting in provider batches' if pending else ''}),"
        f" {report.count('known')} already ingested{extra}"
        f" · audio {report.audio_seconds:.1f} s · wall {report.wall_seconds:.1f} s · {speed}"
    )
    (console if as_json else out).print(summary)


quarantine_app = typer.Typer(help="Recordings that were rejected, and re-driving them.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")


REASON_HELP = "Only these reason codes (repeat the option for more); an unknown code is an error."
USER_HELP = "Only these users' recordings."
RECORDING_HELP = "Only these recording ids."


def _selection(reason: list[str] | None, user: list[str] | None, recording: list[str] | None):
    from diary_platform.domain.ingest.quarantine import Selection

    return Selection(frozenset(reason or ()), frozenset(user or ()), frozenset(recording or ()))


@quarantine_app.command("list")
def quarantine_list(
    reason: list[str] = typer.Option(None, help=REASON_HELP),
    user: list[str] = typer.Option(None, help=USER_HELP),
    recording: list[str] = typer.Option(None, help=RECORDING_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per recording."),
) -> None:
    """Recordings whose latest attempt was rejected, with the reason and a message a person understands."""
    from diary_platform.domain.catalog import Catalog
    from diary_platform.domain.ingest.quarantine import list_quarantine
    from diary_platform.resources import open_state, open_store
    from diary_platform.runner import dagster_instance

    selection = _selection(reason, user, recording)
    settings = Settings()
    state = open_state(settings, dagster_instance(settings))
    recordings = list_quarantine(Catalog(open_store(settings)), state.batches, selection)
    out = Console(soft_wrap=True)
    for r in recordings:
        if as_json:
            print(json.dumps(asdict(r), default=str, ensure_ascii=False))
        else:
            out.print(escape(f"{r.recording_id}  {r.user}/{r.source_name}  batch {r.batch_key}  [{r.reason}] {r.message}"))
    console.print(f"{len(recordings)} quarantined recordings")


@quarantine_app.command("redrive")
def quarantine_redrive(
    reason: list[str] = typer.Option(None, help=REASON_HELP),
    user: list[str] = typer.Option(None, help=USER_HELP),
    recording: list[str] = typer.Option(None, help=RECORDING_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per recording."),
) -> None:
    """Process the quarantined recordings again, as one new batch, under the current limits (the Dagster UI's
    `redrive_job` does the same)."""
    from diary_platform.runner import dagster_instance, redrive

    selection = _selection(reason, user, recording)
    settings = Settings()
    instance = dagster_instance(settings)
    _print_report(_until_stopped(lambda: redrive(settings, instance, selection), instance), as_json)


@app.command()
def status(limit: int = typer.Option(10, help="How many recent batches.")) -> None:
    """Recent batches: recordings by status, audio, transcription speed and cost so far (compute, models, storage)."""
    from rich.table import Table

    from diary_platform.definitions import build_resources
    from diary_platform.domain.catalog import Catalog
    from diary_platform.domain.status import recent_batches
    from diary_platform.resources import open_store

    settings = Settings()
    store = open_store(settings)
    pricing = build_resources(settings)["pricing"]
    batches = recent_batches(Catalog(store), lambda tables: pricing.costs(tables, store), limit)
    table = Table(title="Recent batches")
    for column in ("batch", "recs", "ok", "quar", "audio s", "speed", "cost $"):  # fits 80 columns with whole keys
        table.add_column(column, justify="left" if column == "batch" else "right", no_wrap=True)
    for b in batches:
        table.add_row(
            b.batch_key, str(b.recordings), str(b.by_status.get("ok", 0)), str(b.by_status.get("quarantined", 0)),
            f"{b.audio_seconds:.1f}", f"{b.speed:.1f}x" if b.transcribe_seconds else "-", f"{b.cost_usd:.6f}",
        )
    out = Console(soft_wrap=True)
    out.print(table)
    audio = sum(b.audio_seconds for b in batches)
    seconds = sum(b.transcribe_seconds for b in batches)
    speed = f"speed {audio / seconds:.1f}x" if seconds else "nothing transcribed"
    out.print(
        f"{len(batches)} batches · {sum(b.recordings for b in batches)} recordings · "
        f"{sum(b.by_status.get('quarantined', 0) for b in batches)} quarantined · "
        f"{sum(b.by_status.get('pending', 0) for b in batches)} notes waiting in provider batches · audio {audio:.1f} s · "
        f"{speed} · cost so far ${sum(b.cost_usd for b in batches):.6f}"
    )


@app.command()
def stale(
    rerun: bool = typer.Option(False, "--rerun", help="Transcribe them again (transcripts and notes only)."),
    as_json: bool = typer.Option(False, "--json", help="With --rerun: one JSON object per recording."),
) -> None:
    """Batches whose transcripts the transcription policy (DIARY_TRANSCRIPTION_POLICY) or the model registry (a
    promotion, an experiment) now routes to other settings, and how many recordings in each; --rerun
    transcribes exactly those again."""
    from diary_platform.domain.catalog import TRANSCRIPTS, Catalog
    from diary_platform.domain.models.assignment import ModelRouting
    from diary_platform.domain.models.registry import load_registry
    from diary_platform.domain.speech.policy import stale_batches
    from diary_platform.resources import open_state, open_store
    from diary_platform.runner import dagster_instance, retranscribe

    settings = Settings()
    instance = dagster_instance(settings)
    promotions = open_state(settings, instance).model_promotions
    routing = ModelRouting(load_registry(settings.model_registry, settings.transcriber), promotions, datetime.now(timezone.utc))
    batches = stale_batches(
        settings.policy(), Catalog(open_store(settings)).every_batch(TRANSCRIPTS), lambda row: routing.transcription(row["user"])[1]
    )
    for key, count in batches.items():
        console.print(f"{key}  {count} recording(s) transcribed under other settings")
    console.print(f"{len(batches)} stale batch(es)")
    if rerun and batches:
        _print_report(retranscribe(settings, instance, list(batches)), as_json)


@app.command("instance-setup")
def instance_setup() -> None:
    """Set the instance's pool limits: `gpu` (DIARY_GPU_SLOTS) and `llm` (DIARY_LLM_SLOTS), and create or migrate
    the shared state's tables when it lives in Postgres; run once per deploy."""
    from diary_platform.domain.state_database import state_database
    from diary_platform.resources import shared_state_url
    from diary_platform.runner import configure_pools, dagster_instance

    settings = Settings()
    instance = dagster_instance(settings)
    for pool, slots in configure_pools(instance, settings.pool_slots.model_dump()).items():
        console.print(f"pool {pool}: {slots} slots")
    url = shared_state_url(settings.state_url, instance)
    if url:
        database = state_database(url)
        console.print(f"shared state: {database.location}, schema version {database.migrate()}")
    else:
        console.print(f"shared state: files under {settings.data_dir}")


@app.command()
def ui(port: int = typer.Option(3000, help="Port of the web UI.")) -> None:
    """Dagster UI and daemon over the same data folder and instance, with the landing sensor on."""
    from diary_platform.runner import dagster_instance

    settings = Settings()
    dagster_instance(settings)
    if settings.landing_uri:
        console.print(f"landing bucket: {settings.landing_uri}  (upload recordings under <user>/)")
    else:
        settings.landing_dir.mkdir(parents=True, exist_ok=True)
        console.print(f"landing folder: {settings.landing_dir}  (drop recordings into <user>/ sub-folders)")
    command = [str(Path(sys.executable).parent / "dg"), "dev", "-m", "diary_platform.definitions", "-p", str(port)]
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home), "DIARY_DATA_DIR": str(settings.data_dir)}
    raise typer.Exit(subprocess.call(command, env=env))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(8000, help="Port of the HTTP API."),
) -> None:
    """The HTTP API: uploads into the landing area, status, OpenAI-compatible transcription (`/docs` for the schema).
    Keys come from DIARY_API_KEYS or DIARY_API_KEYS_FILE; the landing sensor (`diary ui` or a deployment) does the work."""
    import uvicorn

    from diary_platform.api.app import create_app

    settings = Settings()
    application = create_app(settings)
    if not application.state.platform.keys.users_by_digest:
        console.print("no API keys: set DIARY_API_KEYS=user:key,... or DIARY_API_KEYS_FILE (every request is refused until then)")
    uvicorn.run(application, host=host, port=port, log_level="info", proxy_headers=True)


def main() -> None:
    """The platform's own failures end in one line on stderr and exit status 1; `DIARY_DEBUG=1` adds the traceback."""
    try:
        app()
    except Exception as error:  # a quarantined recording is a result, so anything raised here is the platform's
        if os.environ.get("DIARY_DEBUG"):
            raise
        console.print(f"[bold red]diary: error:[/bold red] {escape(_explain(error))}")
        raise SystemExit(1) from None


def _explain(error: BaseException) -> str:
    """The error and, when it wraps another (a failed Dagster step does), the one at the root."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    text = f"{type(error).__name__}: {error}".strip()
    return text if root is error else f"{text} ({type(root).__name__}: {root})"
