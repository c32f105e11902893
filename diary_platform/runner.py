"""Processing files now, in this process, through the same asset graph the sensor feeds (used by `diary run`)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg

from diary_platform.definitions import batch_assets, batch_checks
from diary_platform.domain.ingest.landing import batch_files
from diary_platform.domain.ingest.quarantine import list_quarantine, redrive_manifest
from diary_platform.domain.store.layout import DataStore
from diary_platform.partitions import BATCHES
from diary_platform.resources import build_resources
from diary_platform.settings import Settings

TABLES = ("raw_audio", "validated_audio", "transcripts", "diary_notes")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


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
    """The instance under DAGSTER_HOME, by default a SQLite one inside the data folder."""
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("# Local instance: SQLite storage in this folder (Dagster's defaults).\n")
    return dg.DagsterInstance.get()


def configure_pools(instance: dg.DagsterInstance, slots: dict[str, int]) -> dict[str, int]:
    """Pool limits live in the instance's storage, not in dagster.yaml; this sets them, idempotently."""
    for pool, count in slots.items():
        instance.event_log_storage.set_concurrency_slots(pool, count)
    return {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in slots}


def _batch_rows(store: DataStore, batch_key: str) -> dict[str, dict]:
    """One joined row per content hash across the four tables of a batch, as far as they exist."""
    joined: dict[str, dict] = {}
    for name in TABLES:
        if not store.has_table(name, batch_key):
            continue
        for row in store.read_table(name, batch_key).iter_rows(named=True):
            joined.setdefault(row["content_sha256"], {})[name] = row
    return joined


def _location(store: DataStore, uri: str | None) -> str | None:
    """A local path where the object is a local file (in whichever tier), else its URI."""
    found = store.find_uri(uri) if uri else None
    if found is None:
        return uri
    return str(Path(unquote(urlparse(found.uri).path))) if found.uri.startswith("file:") else found.uri


def _result(store: DataStore, file: Path, batch_key: str, tables: dict, new: bool) -> RecordingResult:
    raw = tables.get("raw_audio", {})
    validated = tables.get("validated_audio", {})
    transcript = tables.get("transcripts", {})
    note = tables.get("diary_notes", {})
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


def _materialize(manifest, settings: Settings, instance: dg.DagsterInstance, resources: dict) -> list[RecordingResult]:
    instance.add_dynamic_partitions(BATCHES, [manifest.key])
    dg.materialize(
        [*batch_assets, *batch_checks], partition_key=manifest.key, instance=instance, resources=resources, run_config=QUIET
    )
    store = settings.data_store()
    rows = _batch_rows(store, manifest.key)
    return [_result(store, Path(i.source_path), manifest.key, rows.get(i.content_sha256, {}), True) for i in manifest.items]


def redrive(
    settings: Settings, instance: dg.DagsterInstance, reasons: set[str] | None = None
) -> RunReport:
    """Process the quarantined recordings again, as one new batch, under the current limits."""
    started = time.perf_counter()
    recordings = list_quarantine(settings.data_store(), reasons)
    if not recordings:
        return RunReport([], time.perf_counter() - started)
    resources = build_resources(settings)
    manifest = redrive_manifest(recordings, datetime.now(timezone.utc), resources["storage"].batches)
    return RunReport(_materialize(manifest, settings, instance, resources), time.perf_counter() - started)


def process_files(
    files: list[Path],
    user: str,
    settings: Settings,
    instance: dg.DagsterInstance,
    on_batch: Callable[[str, int], None] = lambda key, count: None,
    on_done: Callable[[int], None] = lambda count: None,
) -> RunReport:
    started = time.perf_counter()
    store = settings.data_store()
    resources = build_resources(settings)
    storage = resources["storage"]
    manifests, known = batch_files(
        files, user, datetime.now(timezone.utc), storage.batches, storage.claims, settings.batch_limits
    )
    results: list[RecordingResult] = []
    on_done(len(known))
    for manifest in manifests:
        on_batch(manifest.key, len(manifest.items))
        results += _materialize(manifest, settings, instance, resources)
        on_done(len(manifest.items))
    for file in known:
        rows = _batch_rows(store, file.batch_key) if file.batch_key else {}
        results.append(_result(store, file.path, file.batch_key or "", rows.get(file.content_sha256, {}), False))
    return RunReport(results, time.perf_counter() - started)
