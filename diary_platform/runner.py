"""Processing files now, in this process, through the same `process_batch` job the sensor launches (`diary run`)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg

from diary_platform.batch import PROCESS_BATCH
from diary_platform.definitions import build_definitions
from diary_platform.domain import catalog
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.ingest.batches import BatchManifest, BatchStore
from diary_platform.domain.ingest.claims import Claims
from diary_platform.domain.ingest.landing import batch_files
from diary_platform.domain.ingest.quarantine import list_quarantine, redrive_manifest
from diary_platform.domain.store.layout import DataStore
from diary_platform.partitions import BATCHES
from diary_platform.resources import open_store
from diary_platform.settings import Settings

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
LOCAL_INSTANCE = "# Local instance: SQLite storage in this folder (Dagster's defaults).\n"


@dataclass(frozen=True)
class RecordingResult:
    file: str
    recording_id: str
    batch_key: str
    status: str
    reason: str | None
    message: str | None
    new: bool
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

    @property
    def audio_seconds(self) -> float:
        return sum(r.audio_seconds for r in self.new)

    @property
    def speed(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance in `settings.dagster_home`, by default a SQLite one inside the data folder."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(LOCAL_INSTANCE)
    return dg.DagsterInstance.from_config(str(home))


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


def _result(store: DataStore, file: Path, batch_key: str, tables: dict, new: bool) -> RecordingResult:
    raw = tables.get(catalog.RAW_AUDIO, {})
    validated = tables.get(catalog.VALIDATED_AUDIO, {})
    transcript = tables.get(catalog.TRANSCRIPTS, {})
    note = tables.get(catalog.DIARY_NOTES, {})
    last = note or transcript or validated or raw
    return RecordingResult(
        file=str(file),
        recording_id=last.get("recording_id", ""),
        batch_key=batch_key,
        status=last.get("status", "unknown"),
        reason=last.get("reason"),
        message=last.get("message"),
        new=new,
        warnings=list(validated.get("warnings") or []),
        audio_seconds=float(validated.get("duration_seconds") or 0.0),
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


class BatchRunner:
    """Runs batches through the `process_batch` job of the definitions these settings build, in this process."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance, source: str):
        self.settings = settings
        self.instance = instance
        self.source = source
        self.store = open_store(settings)
        self.catalog = Catalog(self.store)
        self.batches = BatchStore(self.store.batches_root)
        self.claims = Claims(self.store.claims_root)
        self.job = build_definitions(settings).resolve_job_def(PROCESS_BATCH)

    def run(self, manifest: BatchManifest) -> list[RecordingResult]:
        self.instance.add_dynamic_partitions(BATCHES, [manifest.key])
        users = ",".join(sorted({item.user for item in manifest.items}))
        self.job.execute_in_process(
            partition_key=manifest.key,
            instance=self.instance,
            run_config=QUIET,
            tags={"diary/source": self.source, "diary/users": users, "diary/batch": manifest.key},
        )
        rows = self.catalog.recordings_of_batch(manifest.key)
        return [
            _result(self.store, Path(item.source_path), manifest.key, rows.get(item.content_sha256, {}), True)
            for item in manifest.items
        ]


def redrive(settings: Settings, instance: dg.DagsterInstance, reasons: set[str] | None = None) -> RunReport:
    """Process the quarantined recordings again, as one new batch, under the current limits."""
    started = time.perf_counter()
    runner = BatchRunner(settings, instance, source="redrive")
    recordings = list_quarantine(runner.catalog, reasons)
    if not recordings:
        return RunReport([], time.perf_counter() - started)
    manifest = redrive_manifest(recordings, datetime.now(timezone.utc), runner.batches)
    return RunReport(runner.run(manifest), time.perf_counter() - started)


def process_files(
    files: list[Path],
    user: str,
    settings: Settings,
    instance: dg.DagsterInstance,
    on_batch: Callable[[str, int], None] = lambda key, count: None,
    on_done: Callable[[int], None] = lambda count: None,
) -> RunReport:
    started = time.perf_counter()
    runner = BatchRunner(settings, instance, source="cli")
    manifests, known = batch_files(files, user, datetime.now(timezone.utc), runner.batches, runner.claims, settings.batch_limits)
    results: list[RecordingResult] = []
    on_done(len(known))
    for manifest in manifests:
        on_batch(manifest.key, len(manifest.items))
        results += runner.run(manifest)
        on_done(len(manifest.items))
    for file in known:
        rows = runner.catalog.recordings_of_batch(file.batch_key) if file.batch_key else {}
        results.append(_result(runner.store, file.path, file.batch_key or "", rows.get(file.content_sha256, {}), False))
    return RunReport(results, time.perf_counter() - started)
