"""Materialization metadata every stage reports, so the UI shows counts, audio and speed per batch."""

import polars as pl

from diary_platform.domain.schemas import STATUS_QUARANTINED


def batch_metadata(table: pl.DataFrame, wall_seconds: float, audio_column: str | None = None) -> dict:
    quarantined = table.filter(pl.col("status") == STATUS_QUARANTINED)
    metadata: dict = {
        "recordings": table.height,
        "failures": quarantined.height,
        "processing_seconds": round(wall_seconds, 3),
    }
    if audio_column:
        audio_seconds = float(table[audio_column].fill_null(0).sum())
        metadata["audio_seconds"] = round(audio_seconds, 3)
        metadata["speed"] = round(audio_seconds / wall_seconds, 2) if wall_seconds > 0 else 0.0
    if quarantined.height:
        reasons = quarantined.group_by("reason").len().sort("reason")
        metadata["failure_reasons"] = {row["reason"]: row["len"] for row in reasons.iter_rows(named=True)}
    return metadata
