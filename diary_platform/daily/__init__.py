"""The daily slice: each day's digests and cost report, kept current through the day as batches land
(todays_refresh.py), the job and schedule that close a day, and the sensor that writes a closed day again
when a late recording arrives."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl

from diary_platform.daily.cost_report import budget_warning, cost_report_asset, within_daily_budget
from diary_platform.daily.daily_digest import daily_digest_asset
from diary_platform.daily.jobs import daily_job
from diary_platform.daily.todays_refresh import todays_refresh
from diary_platform.domain import catalog
from diary_platform.domain.schemas import STATUS_OK
from diary_platform.partitions import daily_partitions
from diary_platform.resources import StoreResource
from diary_platform.settings import Settings


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
    asset_key=dg.AssetKey(catalog.DIARY_NOTES),
    job=daily_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A batch with recordings of a day that has already closed writes that day's digest again.",
)
def late_recordings_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry, store: StoreResource):
    batch = asset_event.dagster_event.partition
    if not batch or not store.catalog.has(catalog.DIARY_NOTES, batch):
        return
    today = datetime.now(timezone.utc).date()
    notes = store.catalog.batch(catalog.DIARY_NOTES, batch).filter(pl.col("status") == STATUS_OK)
    first_day = daily_partitions.start.date()
    for day in sorted({recorded.date() for recorded in notes["recorded_at"]}):
        if first_day <= day < today:
            yield dg.RunRequest(partition_key=day.isoformat(), run_key=f"{day.isoformat()}:{batch}")


def definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[daily_digest_asset(settings), cost_report_asset(settings)],
        asset_checks=[within_daily_budget, budget_warning],
        jobs=[daily_job],
        schedules=[daily_schedule],
        sensors=[late_recordings_sensor, todays_refresh],
    )
