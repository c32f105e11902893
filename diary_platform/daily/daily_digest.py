from datetime import timedelta

import dagster as dg
import polars as pl

from diary_platform.domain import catalog
from diary_platform.domain.notes.digest import write_digests
from diary_platform.k8s import step_tags
from diary_platform.partitions import daily_partitions
from diary_platform.resources import NoteWriterResource, StoreResource
from diary_platform.retries import NETWORK_RETRY
from diary_platform.settings import Settings

# A day's digest reads the notes of batches created on that day and up to this many days later (late uploads).
LATE_DAYS = 30


def daily_digest_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=catalog.DAILY_DIGEST,
        op_tags=step_tags(settings, catalog.DAILY_DIGEST),
        partitions_def=daily_partitions,
        group_name="diary",
        kinds={"polars", "parquet"},
        pool="llm",
        retry_policy=NETWORK_RETRY,
        code_version="1",
        deps=[dg.AssetDep(catalog.DIARY_NOTES, partition_mapping=dg.AllPartitionMapping())],
        description="Per user and day, one diary entry combining that day's notes in recording-time order.",
    )
    def daily_digest(
        context: dg.AssetExecutionContext, store: StoreResource, note_writer: NoteWriterResource
    ) -> pl.DataFrame:
        day = context.partition_time_window.start.date()
        notes = store.catalog.created_between(catalog.DIARY_NOTES, day, day + timedelta(days=LATE_DAYS))
        table = write_digests(notes, day, note_writer.build())
        preview = "\n\n---\n\n".join(table["markdown"].to_list()) or "*No recordings on this day.*"
        context.add_output_metadata(
            {
                "dagster/row_count": table.height,
                "users": table.height,
                "recordings": int(table["recording_ids"].list.len().sum()) if table.height else 0,
                "cost_usd": float(table["cost_usd"].sum()) if table.height else 0.0,
                "preview": dg.MetadataValue.md(preview),
            }
        )
        return table

    return daily_digest
