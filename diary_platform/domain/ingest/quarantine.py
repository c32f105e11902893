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
from diary_platform.domain.catalog import RAW_AUDIO, VALIDATED_AUDIO, Catalog, latest_rows


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


def list_quarantine(catalog: Catalog, reasons: set[str] | None = None) -> list[QuarantinedRecording]:
    """Recordings whose latest validation rejected them, optionally only those with one of `reasons`."""
    validated = catalog.every_batch(VALIDATED_AUDIO)
    if validated.is_empty():
        return []
    sources = catalog.every_batch(RAW_AUDIO).select("recording_id", "batch_key", "source_path", "source_name", "size_bytes")
    latest = latest_rows(validated.join(sources, on=["recording_id", "batch_key"], how="left"))
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
