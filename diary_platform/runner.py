"""Processing files now, in this process, through the same `process_batch` job the sensor launches (`diary run`),
and resuming what a killed run left half done (`diary run` again, `diary recover`)."""

import fcntl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg

from diary_platform.batch import PROCESS_BATCH, RETRANSCRIBE
from diary_platform.batch.recovery import batch_run_tags, process_tags, recovery_for
from diary_platform.definitions import build_definitions
from diary_platform.domain import catalog
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.ingest.batches import BatchItem, BatchManifest
from diary_platform.domain.ingest.claims import Owner
from diary_platform.domain.ingest.landing import HandedFile, Intake, batch_files
from diary_platform.domain.ingest.quarantine import Selection, list_quarantine, redrive_manifest
from diary_platform.domain.ingest.recovery import BatchState
from diary_platform.domain.store.hashing import recording_id_for
from diary_platform.domain.store.layout import DataStore
from diary_platform.partitions import BATCHES
from diary_platform.resources import open_state, open_store
from diary_platform.settings import Settings

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The local instance: SQLite in DAGSTER_HOME; the daemon retries a crashed run and notices a dead one, as in production.
LOCAL_INSTANCE = """\
# Local instance: SQLite storage in this folder. Written by `diary` when missing.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
run_queue:
  dequeue_interval_seconds: 1
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
telemetry:
  enabled: false
"""

# How each recording came to this report: taken now, resumed after a crash, done before, being processed
# by another process, or not taken (the reason is in `reason`).
NEW, RESUMED, KNOWN, ELSEWHERE, SKIPPED, RETRANSCRIBED = "new", "resumed", "known", "elsewhere", "skipped", "retranscribed"


@dataclass(frozen=True)
class RecordingResult:
    file: str
    recording_id: str
    batch_key: str
    status: str
    reason: str | None
    message: str | None
    new: bool
    origin: str
    warnings: list[str]
    audio_seconds: float
    transcript: str | None
    transcript_path: str | None
    note_markdown: str | None
    note_path: str | None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class RunReport:
    results: list[RecordingResult]
    wall_seconds: float

    @property
    def new(self) -> list[RecordingResult]:
        return [r for r in self.results if r.new]

    def count(self, origin: str) -> int:
        return sum(r.origin == origin for r in self.results)

    @property
    def audio_seconds(self) -> float:
        return sum(r.audio_seconds for r in self.new)

    @property
    def speed(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance in `settings.dagster_home`, by default a SQLite one inside the data folder.

    Creating a SQLite instance migrates its schema; two processes doing that at once would leave two
    schema heads behind, so creation is serialized with a lock in the folder.
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".diary-instance.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text(LOCAL_INSTANCE)
        instance = dg.DagsterInstance.from_config(str(home))
        instance.get_runs(limit=1)  # the storages are created and migrated now, under the lock
    return instance


def configure_pools(instance: dg.DagsterInstance, slots: dict[str, int]) -> dict[str, int]:
    """Pool limits live in the instance's storage, not in dagster.yaml; this sets them, idempotently."""
    for pool, count in slots.items():
        instance.event_log_storage.set_concurrency_slots(pool, count)
    return {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in slots}


def _location(store: DataStore, uri: str | None) -> str | None:
    """A local path where the object is a local file (in whichever tier), else its URI."""
    found = store.find_uri(uri) if uri else None
    if found is None:
        return uri
    return str(Path(unquote(urlparse(found.uri).path))) if found.uri.startswith("file:") else found.uri


def _result(store: DataStore, file: Path, batch_key: str, tables: dict, origin: str) -> RecordingResult:
    raw = tables.get(catalog.RAW_AUDIO, {})
    validated = tables.get(catalog.VALIDATED_AUDIO, {})
    transcript = tables.get(catalog.TRANSCRIPTS, {})
    note = tables.get(catalog.DIARY_NOTES, {})
    last = note or transcript or validated or raw
    status = {ELSEWHERE: "in_progress"}.get(origin, last.get("status", "unknown"))
    return RecordingResult(
        file=str(file),
        recording_id=last.get("recording_id", ""),
        batch_key=batch_key,
        status=status,
        reason=last.get("reason"),
        message=last.get("message"),
        new=origin in (NEW, RESUMED, RETRANSCRIBED),
        origin=origin,
        warnings=list(validated.get("warnings") or []),
        audio_seconds=float(validated.get("duration_seconds") or 0.0) if origin in (NEW, RESUMED) else 0.0,
        transcript=transcript.get("text"),
        transcript_path=_location(store, transcript.get("txt_uri")),
        note_markdown=note.get("markdown"),
        note_path=_location(store, note.get("note_uri")),
        timings={
            "decode_seconds": float(validated.get("decode_seconds") or 0.0),
            "transcribe_seconds": float(transcript.get("processing_seconds") or 0.0),
            "note_seconds": float(note.get("latency_seconds") or 0.0),
        },
    )


def _skipped(handed: HandedFile) -> RecordingResult:
    return RecordingResult(
        file=str(handed.path), recording_id="", batch_key="", status=SKIPPED, reason=handed.skipped.reason,
        message=handed.skipped.message, new=False, origin=SKIPPED, warnings=[], audio_seconds=0.0,
        transcript=None, transcript_path=None, note_markdown=None, note_path=None,
    )


class BatchRunner:
    """Runs batches through the `process_batch` job of the definitions these settings build, in this process.

    Each run is tagged with this process (host, pid, start time), so that if it is killed a later look
    finds the run's process gone and the batch resumable."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance, source: str):
        self.settings = settings
        self.instance = instance
        self.source = source
        self.owner = Owner.this_process(source)
        self.store = open_store(settings)
        self.catalog = Catalog(self.store)
        state = open_state(settings, instance)
        self.batches = state.batches
        self.recovery = recovery_for(instance, self.batches, self.catalog)
        self.intake = Intake(self.batches, state.claims, self.owner, self._state)
        self.job = build_definitions(settings).resolve_job_def(PROCESS_BATCH)

    def _state(self, key: str) -> BatchState:
        return self.recovery.state(key, datetime.now(timezone.utc))

    def register(self, manifests: list[BatchManifest]) -> None:
        """Partitions first, so that every process and the UI see the batches before they run."""
        if manifests:
            self.instance.add_dynamic_partitions(BATCHES, [m.key for m in manifests])

    def run(self, manifest: BatchManifest, origin: str = NEW) -> list[RecordingResult]:
        self.register([manifest])
        self.job.execute_in_process(
            partition_key=manifest.key,
            instance=self.instance,
            run_config=QUIET,
            tags={**batch_run_tags(self.source, manifest), **process_tags(self.owner)},
        )
        return self.results_of(manifest, origin)

    def results_of(self, manifest: BatchManifest, origin: str) -> list[RecordingResult]:
        rows = self.catalog.recordings_of_batch(manifest.key)
        return [_result(self.store, self._file_of(item), manifest.key, rows.get(item.content_sha256, {}), origin) for item in manifest.items]

    def _file_of(self, item: BatchItem) -> Path:
        """The file as the user knows it: the path handed over, or for a re-drive (which reads the stored
        original) or an object in the landing bucket the name it was uploaded under."""
        by_name = self.source == "redrive" or item.source_path.startswith("gs://")
        return Path(item.user, item.relative_path) if by_name else Path(item.source_path)

    def resume(self, key: str) -> list[RecordingResult]:
        """Run a stranded batch again, unless another process took it over first."""
        if not self.recovery.take(key, self.owner, datetime.now(timezone.utc)):
            return []
        return self.run(self.batches.read(key), RESUMED)


def redrive(settings: Settings, instance: dg.DagsterInstance, selection: Selection = Selection()) -> RunReport:
    """Process the quarantined recordings `selection` takes again, as one new batch, under the current limits."""
    started = time.perf_counter()
    runner = BatchRunner(settings, instance, source="redrive")
    recordings = list_quarantine(runner.catalog, runner.batches, selection)
    if not recordings:
        return RunReport([], time.perf_counter() - started)
    manifest = redrive_manifest(recordings, datetime.now(timezone.utc), runner.intake)
    return RunReport(runner.run(manifest), time.perf_counter() - started)


def retranscribe(settings: Settings, instance: dg.DagsterInstance, keys: list[str]) -> RunReport:
    """Transcripts and notes of these batches again under the current policy (`diary stale --rerun`)."""
    started = time.perf_counter()
    runner = BatchRunner(settings, instance, source="retranscribe")
    job = build_definitions(settings).resolve_job_def(RETRANSCRIBE)
    results = []
    for key in keys:
        manifest = runner.batches.read(key)
        runner.register([manifest])  # its key may have left the partition set (batch/retention.py)
        job.execute_in_process(partition_key=key, instance=instance, run_config=QUIET, tags={**batch_run_tags("retranscribe", manifest), **process_tags(runner.owner)})
        results += runner.results_of(manifest, RETRANSCRIBED)
    return RunReport(results, time.perf_counter() - started)


def recover(settings: Settings, instance: dg.DagsterInstance, since: datetime) -> RunReport:
    """Resume every stranded batch made since `since` (`diary recover`)."""
    started = time.perf_counter()
    runner = BatchRunner(settings, instance, source="recover")
    now = datetime.now(timezone.utc)
    results = []
    for manifest, _ in list(runner.recovery.stranded(since, now)):
        results += runner.resume(manifest.key)
    return RunReport(results, time.perf_counter() - started)


def process_files(
    files: list[Path],
    user: str,
    settings: Settings,
    instance: dg.DagsterInstance,
    on_batch: Callable[[str, int], None] = lambda key, count: None,
    on_done: Callable[[int], None] = lambda count: None,
) -> RunReport:
    """Take the files into new batches and run them; resume the batches a killed run left behind that hold
    some of these files; report every file (new, resumed, known, being processed elsewhere, or skipped)."""
    started = time.perf_counter()
    runner = BatchRunner(settings, instance, source="cli")
    manifests, others = batch_files(files, user, datetime.now(timezone.utc), runner.intake, settings.batch_limits)
    runner.register(manifests)
    results: list[RecordingResult] = [_skipped(h) for h in others if h.skipped]
    on_done(len(results))
    resumed = sorted({h.batch_key for h in others if h.state is BatchState.STRANDED})
    for key in resumed:
        manifest = runner.batches.read(key)
        on_batch(key, len(manifest.items))
        results += [r for r in runner.resume(key) if r.recording_id]
    for manifest in manifests:
        on_batch(manifest.key, len(manifest.items))
        results += runner.run(manifest)
        on_done(len(manifest.items))
    reported = {r.recording_id for r in results}
    for handed in others:
        if handed.skipped or handed.batch_key is None or recording_id_for(handed.content_sha256) in reported:
            continue
        state = runner._state(handed.batch_key)
        origin = {BatchState.DONE: KNOWN, BatchState.RUNNING: ELSEWHERE}.get(state, ELSEWHERE)
        rows = runner.catalog.recordings_of_batch(handed.batch_key)
        results.append(_result(runner.store, handed.path, handed.batch_key, rows.get(handed.content_sha256, {}), origin))
        on_done(1)
    return RunReport(results, time.perf_counter() - started)
