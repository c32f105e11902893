"""Processing files now, in this process, through the same asset graph the sensor feeds (used by `diary run`)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl

from diary_platform.definitions import batch_assets, batch_checks
from diary_platform.domain.landing import batch_files
from diary_platform.domain.quarantine import list_quarantine, redrive_manifest
from diary_platform.domain.storage import DataStore, path_from_uri
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


def _batch_rows(store: DataStore, batch_key: str) -> dict[str, dict]:
    """One joined row per content hash across the four tables of a batch, as far as they exist."""
    joined: dict[str, dict] = {}
    for name in TABLES:
        path = store.table_path(name, batch_key)
        if not path.exists():
            continue
        for row in pl.read_parquet(path).iter_rows(named=True):
            joined.setdefault(row["content_sha256"], {})[name] = row
    return joined


def _result(file: Path, batch_key: str, tables: dict, new: bool) -> RecordingResult:
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
        transcript_path=str(path_from_uri(transcript["txt_uri"])) if transcript.get("txt_uri") else None,
        note_markdown=note.get("markdown"),
        note_path=str(path_from_uri(note["note_uri"])) if note.get("note_uri") else None,
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
    rows = _batch_rows(DataStore(settings.data_dir), manifest.key)
    return [_result(Path(i.source_path), manifest.key, rows.get(i.content_sha256, {}), True) for i in manifest.items]


def redrive(
    settings: Settings, instance: dg.DagsterInstance, reasons: set[str] | None = None
) -> RunReport:
    """Process the quarantined recordings again, as one new batch, under the current limits."""
    started = time.perf_counter()
    recordings = list_quarantine(DataStore(settings.data_dir), reasons)
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
    store = DataStore(settings.data_dir)
    resources = build_resources(settings)
    storage = resources["storage"]
    manifests, known = batch_files(
        files, user, datetime.now(timezone.utc), storage.batches, storage.ledger, settings.batch_limits
    )
    results: list[RecordingResult] = []
    on_done(len(known))
    for manifest in manifests:
        on_batch(manifest.key, len(manifest.items))
        results += _materialize(manifest, settings, instance, resources)
        on_done(len(manifest.items))
    for file in known:
        rows = _batch_rows(store, file.batch_key) if file.batch_key else {}
        results.append(_result(file.path, file.batch_key or "", rows.get(file.content_sha256, {}), False))
    return RunReport(results, time.perf_counter() - started)
