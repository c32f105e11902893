from datetime import date, datetime, timedelta, timezone

import dagster as dg
import polars as pl

from diary_platform.domain.ingest.batches import batch_time
from diary_platform.domain.notes.digest import write_digests
from diary_platform.domain.schemas import STATUS_OK
from diary_platform.assets.batch_asset import NETWORK_RETRY
from diary_platform.partitions import daily_partitions
from diary_platform.resources import DiaryStorage, NoteWriterResource
from diary_platform.k8s import step_tags

LATE_DAYS = 30


def _notes_ingested_since(storage: DiaryStorage, day: date) -> pl.DataFrame:
    """Notes of batches created on `day` or up to LATE_DAYS after it (batch keys start with their time)."""
    last = day + timedelta(days=LATE_DAYS)
    keys = [key for key in storage.store.table_partitions("diary_notes") if day <= batch_time(key).date() <= last]
    if not keys:
        return pl.DataFrame(schema={"status": pl.Utf8, "recorded_at": pl.Datetime("us", "UTC"), "user": pl.Utf8})
    return pl.concat([storage.store.read_table("diary_notes", key) for key in keys], how="diagonal_relaxed")


@dg.asset(
    op_tags=step_tags("daily_digest"),
    partitions_def=daily_partitions,
    group_name="diary",
    kinds={"polars", "parquet"},
    pool="llm",
    retry_policy=NETWORK_RETRY,
    code_version="1",
    deps=[dg.AssetDep("diary_notes", partition_mapping=dg.AllPartitionMapping())],
    description="Per user and day, one diary entry combining that day's notes in recording-time order.",
)
def daily_digest(
    context: dg.AssetExecutionContext, storage: DiaryStorage, note_writer: NoteWriterResource
) -> pl.DataFrame:
    day = context.partition_time_window.start.date()
    table = write_digests(_notes_ingested_since(storage, day), day, note_writer.build())
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


daily_job = dg.define_asset_job(
    "daily_job",
    selection=dg.AssetSelection.assets("daily_digest", "cost_report"),
    description="A day's digests and cost report.",
)

@dg.schedule(
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    job=daily_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Writes yesterday's digests and cost report half an hour after the day closes (UTC).",
)
def daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    yesterday = (context.scheduled_execution_time.astimezone(timezone.utc) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(partition_key=yesterday, run_key=f"daily-{yesterday}")


@dg.asset_sensor(
    asset_key=dg.AssetKey("diary_notes"),
    job=daily_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A batch with recordings of a day that has already closed writes that day's digest again.",
)
def late_recordings_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry, storage: DiaryStorage):
    batch = asset_event.dagster_event.partition
    if not batch or not storage.store.has_table("diary_notes", batch):
        return
    today = datetime.now(timezone.utc).date()
    notes = storage.store.read_table("diary_notes", batch).filter(pl.col("status") == STATUS_OK)
    days = sorted({recorded.date() for recorded in notes["recorded_at"]})
    for day in days:
        if day < today and day.isoformat() >= daily_partitions.start.strftime("%Y-%m-%d"):
            yield dg.RunRequest(partition_key=day.isoformat(), run_key=f"{day.isoformat()}:{batch}")
