"""Batches older than `DIARY_PARTITION_RETENTION_DAYS` leave Dagster: their partition keys and finished runs.

Every read of a batch asset's whole partition set grows with the keys (the partition bar, the backfill
dialog, listing keys), and the asset page's status rebuilds from the whole materialization history
whenever a key was added since the last look, which at full rate is always (docs/scale.md measures
both). So at full rate a year of batches would make the asset pages take a minute, and old batches
go: first their keys, then their finished runs with the runs' events.

What they named stays: the tables, transcripts and notes in storage, the manifests and claims, the
daily digests and cost reports that summarise them. A batch whose runs are gone is done when its notes
table is stored (`batch_runs` in recovery.py reads storage then). Re-running an old batch (`diary stale
--rerun`, recovery) adds its key again. The retention must outlast recovery's window (Settings checks),
so that no batch recovery might still resume loses its record.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from diary_platform.batch.note_batches import COLLECT_NOTES
from diary_platform.batch.process_batch import PROCESS_BATCH, RETRANSCRIBE
from diary_platform.domain.ingest.batches import batch_time
from diary_platform.partitions import BATCHES

# Each key or run is a statement or two (about 18 ms a key on Postgres, docs/scale.md); an hourly run
# retires at most this many of each, oldest first: 20,000 an hour against 1,200 batches an hour at full rate.
MAX_RETIRED_PER_RUN = 20_000
BATCH_JOBS = (PROCESS_BATCH, RETRANSCRIBE, COLLECT_NOTES)


def expired(keys: list[str], now: datetime, retention: timedelta) -> list[str]:
    """The batch keys made before `now - retention`; keys that no maker of batches wrote are kept."""

    def made_before(key: str, cutoff: datetime) -> bool:
        try:
            return batch_time(key) < cutoff
        except ValueError:
            return False

    cutoff = now - retention
    return [key for key in keys if made_before(key, cutoff)]


def retire_batches(instance: dg.DagsterInstance, retention: timedelta, now: datetime, limit: int = MAX_RETIRED_PER_RUN) -> tuple[int, int]:
    """Delete the oldest expired batch keys and finished batch runs, at most `limit` of each: (keys, runs)."""
    oldest = instance.get_paginated_dynamic_partitions(BATCHES, limit=limit, ascending=True)
    keys = expired(list(oldest.results), now, retention)
    for key in keys:
        instance.delete_dynamic_partition(BATCHES, key)
    runs = 0
    for job in BATCH_JOBS:
        finished = dg.RunsFilter(job_name=job, statuses=list(FINISHED_STATUSES), created_before=now - retention)
        for record in instance.get_run_records(filters=finished, limit=limit - runs, ascending=True):
            instance.delete_run(record.dagster_run.run_id)
            runs += 1
    return len(keys), runs


def retention_definitions(days: int) -> dg.Definitions:
    """The retention job and its hourly schedule (Settings refuses a retention within recovery's window)."""

    @dg.op(name="retire_old_batches", description=f"Deletes the partition keys and finished runs of batches older than {days} days.")
    def retire_old_batches(context: dg.OpExecutionContext) -> None:
        keys, runs = retire_batches(context.instance, timedelta(days=days), datetime.now(timezone.utc))
        context.log.info(f"retired {keys} batch partition keys and {runs} finished batch runs older than {days} days")

    @dg.job(name="batch_retention", description=f"Batches older than {days} days leave Dagster; their data stays in storage.")
    def batch_retention():
        retire_old_batches()

    schedule = dg.ScheduleDefinition(
        name="batch_retention_hourly", job=batch_retention, cron_schedule="15 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING, execution_timezone="UTC",
    )
    return dg.Definitions(jobs=[batch_retention], schedules=[schedule])
