"""The quarantine: recordings whose latest attempt was rejected, and re-driving them as a new batch.

A recording's latest row (by batch key, which sorts by time) decides: once a re-drive succeeds, the
recording leaves the quarantine. Re-driving reads each original from content-addressed storage (it
was kept untouched), so nothing that succeeded is ingested again.
"""

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from diary_platform.domain.ingest.batches import BatchItem, BatchManifest, BatchStore, new_batch_key
from diary_platform.domain.schemas import STATUS_QUARANTINED
from diary_platform.domain.store.layout import DataStore


@dataclass(frozen=True)
class QuarantinedRecording:
    recording_id: str
    content_sha256: str
    user: str
    batch_key: str
    reason: str
    message: str
    source_name: str
    stored_original: str | None
    source_path: str
    size_bytes: int
    recorded_at: datetime


def _latest_rows(store: DataStore) -> pl.DataFrame:
    validated = [store.read_table("validated_audio", key) for key in store.table_partitions("validated_audio")]
    raw = [store.read_table("raw_audio", key) for key in store.table_partitions("raw_audio")]
    if not validated:
        return pl.DataFrame()
    rows = pl.concat(validated, how="diagonal_relaxed")
    sources = pl.concat(raw, how="diagonal_relaxed").select(
        "recording_id", "batch_key", "source_path", "source_name", "size_bytes"
    )
    joined = rows.join(sources, on=["recording_id", "batch_key"], how="left")
    return joined.sort("batch_key").group_by("recording_id", maintain_order=True).last()


def list_quarantine(store: DataStore, reasons: set[str] | None = None) -> list[QuarantinedRecording]:
    latest = _latest_rows(store)
    if latest.is_empty():
        return []
    quarantined = latest.filter(pl.col("status") == STATUS_QUARANTINED)
    if reasons:
        quarantined = quarantined.filter(pl.col("reason").is_in(sorted(reasons)))
    return [
        QuarantinedRecording(
            recording_id=row["recording_id"],
            content_sha256=row["content_sha256"],
            user=row["user"],
            batch_key=row["batch_key"],
            reason=row["reason"],
            message=row["message"] or "",
            source_name=row["source_name"],
            stored_original=row["original_uri"],
            source_path=row["source_path"],
            size_bytes=row["size_bytes"],
            recorded_at=row["recorded_at"],
        )
        for row in quarantined.sort("batch_key", "recording_id").iter_rows(named=True)
    ]


def redrive_manifest(recordings: list[QuarantinedRecording], now: datetime, batch_store: BatchStore) -> BatchManifest:
    """A new batch of exactly these recordings, read from their stored originals where there are any."""
    items = tuple(
        BatchItem(
            user=r.user,
            source_path=r.stored_original or r.source_path,
            relative_path=r.source_name,
            size=r.size_bytes,
            mtime_ns=int(r.recorded_at.timestamp() * 1e9),
            content_sha256=r.content_sha256,
        )
        for r in recordings
    )
    manifest = BatchManifest(new_batch_key(now, items), now.isoformat(), items)
    batch_store.write(manifest)
    return manifest
