"""Batch partition keys older than `DIARY_PARTITION_RETENTION_DAYS` leave Dagster's partition set.

Every read of the whole set grows with it: the asset page's partition bar, the backfill dialog, listing
keys (docs/scale.md measures about 13 µs per key for the bar). At full rate a year of batches would
make those reads take minutes, so old keys go. What they named stays: the tables, transcripts and notes
in storage, the manifests, the daily digests and cost reports that summarise them, and the event log's
materializations (Dagster keeps those; the catalog reads storage, not partitions). Re-running an old
batch (`diary stale --rerun`, recovery) adds its key again.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg

from diary_platform.domain.ingest.batches import batch_time
from diary_platform.partitions import BATCHES, batch_partitions

# Each deletion is one statement (about 14 ms on Postgres, docs/scale.md); a tick deletes at most this many,
# oldest first: 24,000 an hour, against the 1,200 batches an hour made at full rate.
MAX_DELETED_PER_TICK = 2000


def expired(keys: list[str], now: datetime, retention: timedelta) -> list[str]:
    """The batch keys made before `now - retention`; keys that no maker of batches wrote are kept."""

    def made_before(key: str, cutoff: datetime) -> bool:
        try:
            return batch_time(key) < cutoff
        except ValueError:
            return False

    cutoff = now - retention
    return [key for key in keys if made_before(key, cutoff)]


def retention_sensor(days: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="batch_partition_retention",
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Removes batch partition keys older than {days} days (their data stays in storage).",
    )
    def batch_partition_retention(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        oldest = context.instance.get_paginated_dynamic_partitions(BATCHES, limit=MAX_DELETED_PER_TICK, ascending=True)
        keys = expired(list(oldest.results), datetime.now(timezone.utc), timedelta(days=days))
        return dg.SensorResult(
            dynamic_partitions_requests=[batch_partitions.build_delete_request(keys)] if keys else [],
            skip_reason=None if keys else f"no batch key older than {days} days",
        )

    return batch_partition_retention
