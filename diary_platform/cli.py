"""The `diary` command: process recordings now, open the UI."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

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


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given, and the files under folders (skipping notes and hidden files)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in NOT_RECORDINGS
            )
        elif path.is_file():
            files.append(path)
        else:
            raise typer.BadParameter(f"{path} does not exist")
    return files


@app.command()
def run(
    paths: list[Path] = typer.Argument(None, help="Files or folders to process (default: the bundled examples)."),
    user: str = typer.Option("default", help="Whose diary these recordings belong to."),
    data_dir: Path = typer.Option(None, help="Data folder (default: $DIARY_DATA_DIR or ./data)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per recording."),
) -> None:
    """Ingest files through the whole asset graph in this process and say where each result is."""
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

        report = process_files(files, user, settings, instance, on_batch=on_batch, on_done=on_done)
    _print_report(report, as_json)


def _print_report(report, as_json: bool) -> None:
    out = Console(soft_wrap=True)
    for result in report.results:
        if as_json:
            print(json.dumps(asdict(result), ensure_ascii=False))
            continue
        status = result.status if result.new else f"already ingested (batch {result.batch_key})"
        if result.reason:
            status += f" [{result.reason}] {result.message}"
        elif result.warnings:
            status += f" (warnings: {', '.join(result.warnings)})"
        out.print(f"[bold]{escape(Path(result.file).name)}[/bold]  {result.recording_id}  {escape(status)}")
        if result.transcript_path:
            out.print(f"  transcript: {escape(result.transcript_path)}")
        if result.note_path:
            out.print(f"  note:       {escape(result.note_path)}")
    quarantined = sum(1 for r in report.new if r.status != "ok")
    summary = (
        f"recordings: {len(report.new)} new ({quarantined} quarantined), "
        f"{len(report.results) - len(report.new)} already ingested · audio {report.audio_seconds:.1f} s · "
        f"wall {report.wall_seconds:.1f} s · speed {report.speed:.1f}x real time"
    )
    (console if as_json else out).print(summary)


quarantine_app = typer.Typer(help="Recordings that were rejected, and re-driving them.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(
    reason: list[str] = typer.Option(None, help="Only these reason codes."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per recording."),
) -> None:
    """Recordings whose latest attempt was rejected, with the reason and a message a person understands."""
    from diary_platform.domain.catalog import Catalog
    from diary_platform.domain.ingest.quarantine import list_quarantine
    from diary_platform.resources import open_store

    recordings = list_quarantine(Catalog(open_store(Settings())), set(reason or ()))
    out = Console(soft_wrap=True)
    for r in recordings:
        if as_json:
            print(json.dumps(asdict(r), default=str, ensure_ascii=False))
        else:
            out.print(escape(f"{r.recording_id}  {r.user}/{r.source_name}  batch {r.batch_key}  [{r.reason}] {r.message}"))
    console.print(f"{len(recordings)} quarantined recordings")


@quarantine_app.command("redrive")
def quarantine_redrive(
    reason: list[str] = typer.Option(None, help="Only these reason codes (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per recording."),
) -> None:
    """Process the quarantined recordings again, as one new batch, under the current limits."""
    from diary_platform.runner import dagster_instance, redrive

    settings = Settings()
    _print_report(redrive(settings, dagster_instance(settings), set(reason or ())), as_json)


@app.command()
def status(limit: int = typer.Option(10, help="How many recent batches.")) -> None:
    """Recent batches: recordings by status, audio, transcription speed and note cost so far."""
    from rich.table import Table

    from diary_platform.domain.catalog import Catalog
    from diary_platform.domain.status import recent_batches
    from diary_platform.resources import open_store

    batches = recent_batches(Catalog(open_store(Settings())), limit)
    table = Table(title="Recent batches")
    for column in ("batch", "recordings", "ok", "quarantined", "audio s", "speed", "cost $"):
        table.add_column(column, justify="left" if column == "batch" else "right")
    for b in batches:
        table.add_row(
            b.batch_key, str(b.recordings), str(b.by_status.get("ok", 0)), str(b.by_status.get("quarantined", 0)),
            f"{b.audio_seconds:.1f}", f"{b.speed:.1f}x", f"{b.cost_usd:.4f}",
        )
    out = Console(soft_wrap=True)
    out.print(table)
    audio = sum(b.audio_seconds for b in batches)
    seconds = sum(b.transcribe_seconds for b in batches)
    out.print(
        f"{len(batches)} batches · {sum(b.recordings for b in batches)} recordings · "
        f"{sum(b.by_status.get('quarantined', 0) for b in batches)} quarantined · audio {audio:.1f} s · "
        f"speed {audio / seconds if seconds else 0:.1f}x · cost so far ${sum(b.cost_usd for b in batches):.4f}"
    )


@app.command("instance-setup")
def instance_setup() -> None:
    """Set the instance's pool limits: `gpu` (DIARY_GPU_SLOTS) and `llm` (DIARY_LLM_SLOTS); run once per deploy."""
    from diary_platform.runner import configure_pools, dagster_instance

    settings = Settings()
    instance = dagster_instance(settings)
    for pool, slots in configure_pools(instance, settings.pool_slots.model_dump()).items():
        console.print(f"pool {pool}: {slots} slots")


@app.command()
def ui(port: int = typer.Option(3000, help="Port of the web UI.")) -> None:
    """Dagster UI and daemon over the same data folder and instance, with the landing sensor on."""
    from diary_platform.runner import dagster_instance

    settings = Settings()
    dagster_instance(settings)
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"landing folder: {settings.landing_dir}  (drop recordings into <user>/ sub-folders)")
    command = [sys.executable, "-m", "dagster", "dev", "-m", "diary_platform.definitions", "-p", str(port)]
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home), "DIARY_DATA_DIR": str(settings.data_dir)}
    raise typer.Exit(subprocess.call(command, env=env))


def main() -> None:
    """The platform's own failures end in one line on stderr and exit status 1; `DIARY_DEBUG=1` adds the traceback."""
    try:
        app()
    except Exception as error:  # a quarantined recording is a result, so anything raised here is the platform's
        if os.environ.get("DIARY_DEBUG"):
            raise
        console.print(f"[bold red]diary: error:[/bold red] {escape(f'{type(error).__name__}: {error}')}")
        raise SystemExit(1) from None
