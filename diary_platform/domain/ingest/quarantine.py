"""The quarantine: recordings whose latest attempt was rejected or whose batch gave up, and re-driving them.

A recording's latest row (from its newest batch) decides: once a re-drive succeeds, the
recording leaves the quarantine. A batch that failed too often (recovery.py) puts all its recordings
here as `gave_up`, with the last error, unless a later batch has them. Re-driving reads each original
from content-addressed storage where it was stored (it was kept untouched), else from its upload.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from diary_platform.domain.catalog import RAW_AUDIO, VALIDATED_AUDIO, Catalog, latest_rows
from diary_platform.domain.ingest.batches import BatchItem, BatchManifest, BatchStore, batch_order
from diary_platform.domain.ingest.landing import Intake
from diary_platform.domain.schemas import REASONS, STATUS_QUARANTINED
from diary_platform.domain.store.hashing import recording_id_for

GAVE_UP = "gave_up"


class UnknownReason(ValueError):
    """A reason code no stage gives: a typo would otherwise select nothing and look like an empty quarantine."""

    def __init__(self, unknown: set[str]):
        super().__init__(
            f"unknown reason code{'s' if len(unknown) > 1 else ''} {', '.join(sorted(unknown))}; "
            f"the reasons are: {', '.join(REASONS)}"
        )


@dataclass(frozen=True)
class Selection:
    """Which quarantined recordings to list or re-drive: each filter left empty takes all."""

    reasons: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    recording_ids: frozenset[str] = frozenset()

    def __post_init__(self):
        unknown = set(self.reasons) - set(REASONS)
        if unknown:
            raise UnknownReason(unknown)

    def takes(self, recording: "QuarantinedRecording") -> bool:
        return all(
            not wanted or value in wanted
            for wanted, value in ((self.reasons, recording.reason), (self.users, recording.user), (self.recording_ids, recording.recording_id))
        )


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


def list_quarantine(catalog: Catalog, batches: BatchStore, selection: Selection = Selection()) -> list[QuarantinedRecording]:
    """Recordings whose latest validation rejected them or whose batch gave up, those `selection` takes."""
    validated = catalog.every_batch(VALIDATED_AUDIO)
    latest = pl.DataFrame()
    if not validated.is_empty():
        sources = catalog.every_batch(RAW_AUDIO).select("recording_id", "batch_key", "source_path", "source_name", "size_bytes")
        latest = latest_rows(validated.join(sources, on=["recording_id", "batch_key"], how="left"))
    listed = _rejected(latest) + _given_up(catalog, batches, latest)
    return sorted((r for r in listed if selection.takes(r)), key=lambda r: (r.batch_key, r.recording_id))


def _rejected(latest: pl.DataFrame) -> list[QuarantinedRecording]:
    if latest.is_empty():
        return []
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
        for row in latest.filter(pl.col("status") == STATUS_QUARANTINED).iter_rows(named=True)
    ]


def _given_up(catalog: Catalog, batches: BatchStore, latest: pl.DataFrame) -> list[QuarantinedRecording]:
    """The recordings of batches that gave up, but for those a later batch has taken."""
    newest = dict(latest.select("recording_id", "batch_key").iter_rows()) if not latest.is_empty() else {}
    listed = []
    for key in batches.gave_up_keys():
        record = batches.gave_up(key)
        stored = _stored_originals(catalog, key)
        for item in batches.read(key).items:
            recording_id = recording_id_for(item.content_sha256)
            if recording_id in newest and batch_order(newest[recording_id]) > batch_order(key):
                continue
            listed.append(
                QuarantinedRecording(
                    recording_id=recording_id,
                    content_sha256=item.content_sha256,
                    user=item.user,
                    batch_key=key,
                    reason=GAVE_UP,
                    message=f"The batch failed {record['attempts']} times and was given up; last error: {record['last_error']}",
                    source_name=Path(item.relative_path).name,
                    stored_original=stored.get(recording_id),
                    source_path=item.source_path,
                    size_bytes=item.size,
                    recorded_at=datetime.fromtimestamp(item.mtime_ns / 1e9, tz=timezone.utc),
                )
            )
    return listed


def _stored_originals(catalog: Catalog, key: str) -> dict[str, str]:
    if not catalog.has(RAW_AUDIO, key):
        return {}
    raw = catalog.batch(RAW_AUDIO, key).filter(pl.col("original_uri").is_not_null())
    return dict(raw.select("recording_id", "original_uri").iter_rows())


def redrive_manifest(recordings: list[QuarantinedRecording], now: datetime, intake: Intake) -> BatchManifest:
    """A new batch of exactly these recordings, read from their stored originals where there are any; content
    of a batch that gave up moves to the new batch."""
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
    return intake.redrive(list(items), now)
