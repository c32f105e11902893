"""Nothing lost, ever: faults and hostile inputs, each reproduced with real processes, files and instances.

Every test here is one way the platform was seen to lose or duplicate work (issue "Nothing lost, ever"):
`diary run` killed at each stage and run again, two runs at once, the sensor beside a running
`diary run`, torn claim markers, two processes creating one SQLite instance, files that cannot be
read or named, symlinks, a full disk, a bad LLM configuration, a provider kind typed wrong, SIGTERM.
Kills wait for evidence that a stage is under way (its first output file), never for a fixed time.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from diary_platform.batch.recovery import recovery_sensor
from diary_platform.definitions import build_definitions, build_resources
from diary_platform.domain.catalog import DIARY_NOTES, Catalog
from diary_platform.domain.ingest.claims import FileClaims, Owner, create_exclusive
from diary_platform.domain.ingest.landing import BatchLimits, Intake, LandingCursor, LandingScanner, Skipped, read_upload
from diary_platform.domain.ingest.recovery import BatchState
from diary_platform.domain.ingest.batches import FileBatchStore
from diary_platform.domain.notes.llm_config import LLMConfigError, parse_router_config
from diary_platform.domain.notes.note import NoteRequest
from diary_platform.domain.notes.providers import ProviderSpec
from diary_platform.domain.notes.router import NoteRouter, RouterConfig
from diary_platform.domain import stages
from diary_platform.domain.shared_state import open_shared_state
from diary_platform.domain.store.layout import DataStore
from diary_platform.domain.store.objects import NoSpaceLeft
from diary_platform.settings import ConfigurationError, Settings
from diary_platform_tests.conftest import DATA, unavailable
from diary_platform_tests.fake_llm import FakeLLM

REPO = Path(__file__).resolve().parent.parent
DIARY = str(Path(sys.executable).parent / "diary")
CLIPS = sorted(p for p in DATA.iterdir() if p.suffix in {".ogg", ".opus", ".m4a"}) + sorted(
    p for p in (REPO / "examples" / "default").iterdir() if p.suffix in {".flac", ".mp3"}
)
STAGE_OUTPUTS = {
    "ingest": ("audio/original", "*.*"),
    "decode": ("audio/normalised", "*.wav"),
    "transcription": ("transcripts", "*.txt"),
    "notes": ("notes", "*.md"),
}


def _uploads(tmp_path: Path, clips=CLIPS) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir(exist_ok=True)
    for clip in clips:
        shutil.copy(clip, folder / clip.name)
    return folder


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DIARY_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DIARY_BATCH_MAX_FILES": "3",
        **extra,
    }


def _diary(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([DIARY, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _start(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([DIARY, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout: float = 300, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended ({process.returncode}) before {what}: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"waited {timeout:g} s for {what}")


def _first_output(data_dir: Path, stage: str):
    folder, pattern = STAGE_OUTPUTS[stage]
    return lambda: any((data_dir / "hot" / folder).rglob(pattern)) if (data_dir / "hot" / folder).exists() else False


def _records(completed: subprocess.CompletedProcess) -> dict[str, dict]:
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {Path(r["file"]).name: r for r in map(json.loads, completed.stdout.splitlines())}


def _notes_per_recording(data_dir: Path) -> dict[str, int]:
    """How many batches hold an `ok` note for each recording (exactly one each means: processed once)."""
    catalog = Catalog(DataStore(data_dir))
    counts: dict[str, int] = {}
    for key in catalog.keys(DIARY_NOTES):
        for row in catalog.batch(DIARY_NOTES, key).filter(pl.col("status") == "ok").iter_rows(named=True):
            counts[row["recording_id"]] = counts.get(row["recording_id"], 0) + 1
    return counts


def _assert_every_clip_done_once(records: dict[str, dict], data_dir: Path, clips=CLIPS) -> None:
    assert set(records) == {c.name for c in clips}
    for name, record in records.items():
        assert record["status"] == "ok", (name, record)
        assert record["transcript"] and record["note_markdown"].startswith("# "), name
        assert Path(record["transcript_path"]).is_file() and Path(record["note_path"]).is_file(), name
    assert _notes_per_recording(data_dir) == {r["recording_id"]: 1 for r in records.values()}


def _kill_at(env: dict, uploads: Path, data_dir: Path, stage: str) -> None:
    run = _start(env, "run", str(uploads), "--json")
    _wait_for(_first_output(data_dir, stage), f"the {stage} stage", process=run)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL


# 1. A killed run strands its recordings ----------------------------------------------------------------


@pytest.mark.parametrize("stage", list(STAGE_OUTPUTS))
def test_a_run_killed_at_any_stage_is_resumed_by_the_same_command(tmp_path, stage):
    env, uploads, data_dir = _env(tmp_path), _uploads(tmp_path), tmp_path / "data"
    _kill_at(env, uploads, data_dir, stage)
    again = _records(_diary(env, "run", str(uploads), "--json"))
    _assert_every_clip_done_once(again, data_dir)
    assert "resumed" in {r["origin"] for r in again.values()}, "the stranded batch was resumed"
    if stage == "notes":  # the last stage; the earlier ones end in the same state, checked above
        assert _diary(env, "quarantine", "list").stderr.strip().endswith("0 quarantined recordings")
        third = _records(_diary(env, "run", str(uploads), "--json"))
        assert {r["origin"] for r in third.values()} == {"known"}, "done once, and known afterwards"


def test_after_a_kill_the_same_content_dropped_under_another_name_is_processed(tmp_path):
    env, uploads, data_dir = _env(tmp_path, DIARY_BATCH_MAX_FILES="8"), _uploads(tmp_path), tmp_path / "data"
    _kill_at(env, uploads, data_dir, "transcription")
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(CLIPS[0], again / "renamed.ogg")
    records = _records(_diary(env, "run", str(again), "--json"))
    [record] = [r for r in records.values() if Path(r["file"]).name in {"renamed.ogg", CLIPS[0].name}]
    assert record["status"] == "ok" and record["note_markdown"] and record["origin"] == "resumed"


def test_a_killed_run_on_the_postgres_instance_is_resumed(tmp_path, postgres_database):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    database = postgres_database
    env = _env(
        tmp_path, DAGSTER_PG_HOST=database["host"], DAGSTER_PG_PORT=str(database["port"]), DAGSTER_PG_DB=database["dbname"],
        DAGSTER_PG_USER=database["user"], DAGSTER_PG_PASSWORD="trust-auth-ignores-it",
    )
    uploads, data_dir = _uploads(tmp_path, CLIPS[:4]), tmp_path / "data"
    _kill_at(env, uploads, data_dir, "transcription")
    _assert_every_clip_done_once(_records(_diary(env, "run", str(uploads), "--json")), data_dir, CLIPS[:4])
    assert not (data_dir / "batches").exists() and not (data_dir / "claims").exists(), "manifests and claims are in Postgres"


# 2. Two runs at once --------------------------------------------------------------------------------------


def test_two_runs_started_together_process_every_recording_once(tmp_path):
    env, uploads, data_dir = _env(tmp_path, DIARY_BATCH_MAX_FILES="2"), _uploads(tmp_path), tmp_path / "data"
    first, second = _start(env, "run", str(uploads), "--json"), _start(env, "run", str(uploads), "--json")
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [err[-2000:] for _, err in outputs]
    reports = [{Path(r["file"]).name: r for r in map(json.loads, out.splitlines())} for out, _ in outputs]
    for name in (c.name for c in CLIPS):
        origins = sorted(report[name]["origin"] for report in reports)
        assert origins in (["elsewhere", "new"], ["known", "new"], ["new", "resumed"]), (name, origins)
    counts = _notes_per_recording(data_dir)
    assert len(counts) == len(CLIPS) and set(counts.values()) == {1}, counts


# 3. The sensor beside a running `diary run` ---------------------------------------------------------------


def test_the_recovery_sensor_leaves_the_batches_of_a_running_diary_run_alone(tmp_path):
    env, uploads, data_dir = _env(tmp_path, DIARY_BATCH_MAX_FILES="1"), _uploads(tmp_path, CLIPS[:4]), tmp_path / "data"
    run = _start(env, "run", str(uploads), "--json")
    _wait_for(_first_output(data_dir, "notes"), "the first note", process=run)
    settings = Settings(data_dir=data_dir, dagster_home=tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert _recovery_tick(instance, settings) == []
        assert len(instance.get_dynamic_partitions("batches")) == 4, "registered before they run"
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-2000:]
    assert set(_notes_per_recording(data_dir).values()) == {1}


def test_the_recovery_sensor_resumes_a_batch_whose_run_was_killed(tmp_path):
    env, uploads, data_dir = _env(tmp_path, DIARY_BATCH_MAX_FILES="8"), _uploads(tmp_path, CLIPS[:3]), tmp_path / "data"
    _kill_at(env, uploads, data_dir, "transcription")
    settings = Settings(data_dir=data_dir, dagster_home=tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        [request] = _recovery_tick(instance, settings)
        [killed] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": request.partition_key}))
        assert killed.status == dg.DagsterRunStatus.FAILURE, "the killed run is reported failed, not left running"
        assert request.run_key == f"{request.partition_key}:attempt-2" and request.tags["diary/source"] == "recovery"
        result = build_definitions(settings).resolve_job_def("process_batch").execute_in_process(
            partition_key=request.partition_key, instance=instance, tags=request.tags
        )
        assert result.success
        assert _recovery_tick(instance, settings) == []
    assert set(_notes_per_recording(data_dir).values()) == {1}


def test_a_batch_that_keeps_failing_is_given_up_and_quarantined_with_its_last_error(tmp_path, monkeypatch):
    def broken_model(*args, **kwargs):
        raise NoSpaceLeft(tmp_path / "no-model")  # a fault the step does not retry, so each attempt is one run

    monkeypatch.setattr(stages, "transcribe", broken_model)
    settings = Settings(data_dir=tmp_path / "data", dagster_home=tmp_path / "dagster_home")
    state = open_shared_state(settings.data_dir)
    batches = state.batches
    intake = Intake(batches, state.claims, Owner("sensor", "elsewhere", "", 1, 1), lambda key: BatchState.RUNNING)
    manifest = intake.commit(_items(CLIPS[:1]), datetime.now(timezone.utc) - timedelta(minutes=5))
    job = build_definitions(settings).resolve_job_def("process_batch")
    with dg.DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        instance.add_dynamic_partitions("batches", [manifest.key])
        for _ in range(3):
            [request] = _recovery_tick(instance, settings)
            assert not job.execute_in_process(partition_key=manifest.key, instance=instance, raise_on_error=False, tags=request.tags).success
        assert _recovery_tick(instance, settings) == []
    listed = _diary({**_env(tmp_path), "DAGSTER_HOME": str(_home(tmp_path))}, "quarantine", "list", "--json")
    [record] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert record["reason"] == "gave_up" and "3 times" in record["message"] and "no-model" in record["message"]
    assert record["source_name"] == CLIPS[0].name


def _recovery_tick(instance: dg.DagsterInstance, settings: Settings) -> list[dg.RunRequest]:
    """The run requests of one tick of the recovery sensor (none when it skips)."""
    with dg.build_sensor_context(instance=instance, resources=build_resources(settings)) as context:
        result = recovery_sensor(context)
    return [] if isinstance(result, dg.SkipReason) else result.run_requests


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    return home


def _items(clips):
    from diary_platform.domain.ingest.batches import BatchItem

    items = []
    for clip in clips:
        sha, status = read_upload(clip)
        items.append(BatchItem("alice", str(clip), clip.name, status.st_size, status.st_mtime_ns, sha))
    return items


# 4. Claim markers are whole from the moment they exist ----------------------------------------------------

RACER = """
import sys
from pathlib import Path
from diary_platform.domain.ingest.claims import FileClaims, Owner
claims = FileClaims(Path(sys.argv[1]))
won = claims.claim_content("ab" * 32, "batch-" + sys.argv[2], "upload", Owner.this_process("cli"))
print("won" if won else "lost")
"""


def test_many_processes_racing_for_one_content_leave_one_whole_claim(tmp_path):
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "claims"), str(i)], stdout=subprocess.PIPE, text=True)
              for i in range(12)]
    claims = FileClaims(tmp_path / "claims")
    seen = set()
    while any(r.poll() is None for r in racers):
        claim = claims.content_claim("ab" * 32)  # never a torn or empty marker, whatever the moment
        if claim is not None:
            seen.add(claim.batch_key)
    outcomes = [r.communicate()[0].strip() for r in racers]
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 11
    winner = claims.content_claim("ab" * 32)
    assert seen <= {winner.batch_key} and winner.owner.role == "cli"


def test_a_writer_killed_while_writing_a_marker_leaves_no_marker(tmp_path):
    marker = tmp_path / "claims" / "content" / "ab" / "x.json"
    marker.parent.mkdir(parents=True)
    (marker.parent / ".x.json.12345.tmp").write_text('{"batch": "half-writ')  # what a killed writer leaves
    assert not marker.exists()
    assert create_exclusive(marker, {"batch": "b1"}) and json.loads(marker.read_text()) == {"batch": "b1"}
    assert not create_exclusive(marker, {"batch": "b2"}) and json.loads(marker.read_text()) == {"batch": "b1"}


# 5. Two processes creating one fresh SQLite instance ------------------------------------------------------

CREATOR = """
import sys
from diary_platform.runner import dagster_instance
from diary_platform.settings import Settings
dagster_instance(Settings(data_dir=sys.argv[1], dagster_home=sys.argv[1] + "/dagster_home")).get_runs(limit=1)
"""


def test_two_processes_creating_a_fresh_instance_at_once_leave_one_schema(tmp_path):
    creators = [subprocess.Popen([sys.executable, "-c", CREATOR, str(tmp_path / "data")], stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
    assert all(c.wait(timeout=120) == 0 for c in creators), [c.stderr.read()[-1000:] for c in creators]
    home = tmp_path / "data" / "dagster_home"
    for database in (home / "history" / "runs.db", home / "schedules" / "schedules.db"):
        with sqlite3.connect(database) as connection:
            heads = connection.execute("select version_num from alembic_version").fetchall()
        assert len(heads) == 1, (database.name, heads)
    completed = _diary(_env(tmp_path, DAGSTER_HOME=str(home)), "run", str(CLIPS[0]))
    assert completed.returncode == 0, completed.stderr[-2000:]


# 6. One file never stops the others -----------------------------------------------------------------------


def test_a_tick_skips_a_bad_name_a_fifo_and_a_vanished_file_and_takes_the_rest(tmp_path):
    landing = tmp_path / "landing"
    (landing / "alice").mkdir(parents=True)
    shutil.copy(CLIPS[0], landing / "alice" / "good.ogg")
    bad_name = os.fsencode(landing / "alice") + b"/Tagebuch M\xe4rz.ogg"
    with open(bad_name, "wb") as handle:
        handle.write(CLIPS[1].read_bytes())
    os.mkfifo(landing / "alice" / "pipe.wav")
    store = FileBatchStore(tmp_path / "batches")
    intake = Intake(store, FileClaims(tmp_path / "claims"), Owner.this_process("sensor"), lambda key: BatchState.RUNNING)
    scanner = LandingScanner(landing, intake, BatchLimits(max_wait_seconds=0))
    now = datetime.now(timezone.utc)
    first = scanner.tick(LandingCursor(), now)
    second = scanner.tick(LandingCursor.from_json(first.cursor.to_json()), now + timedelta(seconds=15))
    assert [i.relative_path for b in second.batches for i in b.items] == ["alice/good.ogg"]
    assert second.skips.counts == {"name_not_utf8": 1, "not_a_file": 1}
    assert "Tagebuch M\\xe4rz.ogg" in second.skips.summary()
    json.loads(second.cursor.to_json())
    with pytest.raises(Skipped) as vanished:
        read_upload(landing / "alice" / "gone.ogg")
    assert vanished.value.reason == "vanished"


NOBODY = 65534


def test_an_unreadable_file_is_skipped_by_the_cli_and_the_rest_is_processed(tmp_path):
    """A file the user may not read. Root reads everything, so `diary run` runs as root without the
    capabilities that override file permissions (util-linux setpriv), and the file belongs to nobody."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        unavailable("this test needs root and setpriv to run `diary run` without the right to read every file")
    uploads = _uploads(tmp_path, CLIPS[:2])
    locked = uploads / "private.ogg"
    shutil.copy(CLIPS[2], locked)
    os.chown(locked, NOBODY, NOBODY)
    locked.chmod(0o000)
    completed = subprocess.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", DIARY, "run", str(uploads), "--json"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    records = _records(completed)
    assert records["private.ogg"]["status"] == "skipped" and records["private.ogg"]["reason"] == "unreadable"
    assert "Permission denied" in records["private.ogg"]["message"]
    assert all(records[c.name]["status"] == "ok" for c in CLIPS[:2])
    locked.chmod(0o600)
    assert locked.read_bytes() == CLIPS[2].read_bytes()


def test_a_fifo_given_to_the_cli_is_skipped_not_read(tmp_path):
    uploads = _uploads(tmp_path, CLIPS[:1])
    os.mkfifo(uploads / "pipe.wav")
    records = _records(_diary(_env(tmp_path), "run", str(uploads), str(uploads / "pipe.wav"), "--json", timeout=300))
    assert records["pipe.wav"]["reason"] == "not_a_file" and records[CLIPS[0].name]["status"] == "ok"


# 7. The CLI never follows symlinks ------------------------------------------------------------------------


def test_the_cli_does_not_follow_a_symlink_out_of_the_folder(tmp_path):
    uploads = _uploads(tmp_path, CLIPS[:1])
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 50)
    os.symlink(secret, uploads / "x.wav")
    os.symlink(tmp_path, uploads / "loop")
    records = _records(_diary(_env(tmp_path), "run", str(uploads), "--json"))
    assert records["x.wav"]["status"] == "skipped" and records["x.wav"]["reason"] == "symlink"
    stored = [p.read_bytes() for p in (tmp_path / "data" / "hot" / "audio").rglob("*") if p.is_file()]
    assert secret.read_bytes() not in stored and len([r for r in records.values() if r["status"] == "ok"]) == 1


# 8. A full disk is the platform's fault, not the recording's ----------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:
        unavailable(f"a small tmpfs cannot be mounted here ({mounted.stderr.strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_run_with_a_clear_message_and_quarantines_nothing(tmp_path, small_disk):
    long_clip = tmp_path / "long.wav"
    subprocess.run(  # 40 s of 16 kHz audio: 1.3 MB once decoded, more than the 1 MB disk holds
        [sys.executable, "-c", f"import numpy as np, wave; w = wave.open({str(long_clip)!r}, 'wb'); w.setnchannels(1); "
         "w.setsampwidth(2); w.setframerate(8000); w.writeframes((np.sin(np.arange(320000) * 0.05) * 3000).astype('<i2').tobytes())"],
        check=True,
    )
    env = _env(tmp_path, DIARY_DATA_DIR=str(small_disk / "data"))
    failed = _diary(env, "run", str(long_clip))
    assert failed.returncode == 1
    assert "no space left on" in failed.stderr and str(small_disk) in failed.stderr and "Traceback" not in failed.stderr
    assert _diary(env, "quarantine", "list").stderr.strip().endswith("0 quarantined recordings")
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    [record] = _records(_diary(env, "run", str(long_clip), "--json")).values()
    assert record["status"] == "ok" and record["origin"] == "resumed"


# 9. A malformed LLM configuration stops the platform at load, with file, line and key ------------------------


def test_a_malformed_llm_configuration_is_refused_when_the_definitions_load(tmp_path, monkeypatch):
    config = tmp_path / "llm.yaml"
    config.write_text("providers:\n  - name: openai\n    kind: openai\n    models: [gpt-4o-mini]\ncall_timeout_seconds: [30\n")
    monkeypatch.setenv("DIARY_LLM_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match=r"DIARY_LLM_CONFIG.*llm\.yaml:6: not valid YAML"):
        Settings()
    config.write_text("providers:\n  - name: openai\n    kind: openai\n    models: [gpt-4o-mini]\n    timeout: 5\n")
    with pytest.raises(ConfigurationError, match=r"llm\.yaml:5: providers\.0\.timeout: Unexpected keyword argument"):
        Settings()
    completed = _diary({**_env(tmp_path), "DIARY_LLM_CONFIG": str(config)}, "run", str(CLIPS[0]))
    assert completed.returncode == 1 and "llm.yaml:5" in completed.stderr and "Traceback" not in completed.stderr
    assert not (tmp_path / "data" / "claims").exists(), "refused before anything was taken"


# 10. Privacy: unknown provider kinds are refused; local_only is an allow-list --------------------------------


def test_an_unknown_provider_kind_is_refused():
    with pytest.raises(LLMConfigError, match=r"llm\.yaml:3: providers\.0\.kind: Input should be 'openai', 'anthropic' or 'openai_compatible'"):
        parse_router_config("providers:\n  - name: openai\n    kind: OpenAI\n    models: [gpt-4o-mini]\n", "llm.yaml")


def test_local_only_calls_only_servers_on_loopback_or_listed_as_local(tmp_path):
    segments = [{"start": 0.0, "end": 3.0, "text": "Call Anna at anna@example.org about Berlin."}]
    request = NoteRequest("r" * 24, "alice", datetime(2026, 11, 26, tzinfo=timezone.utc), segments[0]["text"], segments)
    with FakeLLM() as fake:
        remote = fake.openai_url.replace("127.0.0.1", "localhost.diary-test.invalid")
        config = RouterConfig(
            providers=(
                ProviderSpec("hosted", "openai_compatible", ("m1",), None, remote),
                ProviderSpec("home", "openai_compatible", ("m2",), None, fake.openai_url),
            ),
            local_only=True, call_timeout_seconds=2, max_retries=0,
        )
        note = NoteRouter(config, open_shared_state(tmp_path)).write(request)
        assert note.provider == "home" and [r["model"] for r in fake.log] == ["m2"]
        assert note.fallback_path[0] == "hosted:skipped(local_only)"
        assert "anna@example.org" in fake.log[0]["body"]["messages"][1]["content"], "a local server sees the transcript as is"
    lan = ProviderSpec("lan", "openai_compatible", ("m",), None, "http://10.0.0.5:8000/v1")
    assert not lan.is_local() and lan.is_local(["10.0.0.5"])
    assert not ProviderSpec("openai", "openai", ("m",), "K", "http://127.0.0.1:1/v1").is_local(["127.0.0.1"])


# 11. SIGTERM stops a run within seconds, resumable ----------------------------------------------------------


def test_sigterm_stops_diary_run_within_five_seconds_and_the_batch_is_resumed(tmp_path):
    env, uploads, data_dir = _env(tmp_path, DIARY_BATCH_MAX_FILES="8"), _uploads(tmp_path), tmp_path / "data"
    run = _start(env, "run", str(uploads), "--json")
    _wait_for(_first_output(data_dir, "transcription"), "transcription", process=run)
    sent = time.monotonic()
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=30)
    assert time.monotonic() - sent < 5, "stopped within five seconds"
    assert run.returncode == 128 + signal.SIGTERM and "resumed by the next" in run.stderr.read()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert {r.status for r in instance.get_runs()} == {dg.DagsterRunStatus.FAILURE}, "no run left 'started' behind"
    again = _records(_diary(env, "run", str(uploads), "--json"))
    _assert_every_clip_done_once(again, data_dir)
