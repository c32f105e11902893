"""What every batch asset shares: its partitioning and group, and the metadata it reports."""

import dagster as dg
import polars as pl

from diary_platform.partitions import batch_partitions

from diary_platform.domain.schemas import STATUS_QUARANTINED


def batch_asset(**kwargs):
    """An asset over the `batches` partitions whose value is a polars table stored as Parquet."""
    return dg.asset(partitions_def=batch_partitions, group_name="diary", kinds={"polars", "parquet"}, **kwargs)


def batch_metadata(table: pl.DataFrame, wall_seconds: float, audio_column: str | None = None) -> dict:
    quarantined = table.filter(pl.col("status") == STATUS_QUARANTINED)
    metadata: dict = {
        "dagster/row_count": table.height,
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
