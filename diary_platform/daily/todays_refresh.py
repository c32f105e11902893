"""Today's cost report and digest, kept current as batches land, at a cost that does not grow with the batches.

A day depends on every batch partition (`AllPartitionMapping`), so declarative automation
(`any_deps_updated`) maps today to all batch partitions on every tick: 41 s per tick after one day of
batches at full rate (docs/scale.md). This sensor reads one indexed row per tick instead, the newest
`diary_notes` materialization, and remembers its storage id: a newer one means a batch landed.
"""

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from diary_platform.daily.jobs import daily_job
from diary_platform.domain import catalog

# Each digest refresh may be a language-model call per user, so it waits for the next quarter hour.
DIGEST_EVERY_MINUTES = 15
REFRESH_TAG = "diary/refresh"


@dataclass(frozen=True)
class TodayCursor:
    """The newest `diary_notes` materialization handled, and since when today's digest is out of date."""

    notes_seen: int = 0
    digest_due_since: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "TodayCursor":
        return cls(**json.loads(text)) if text else cls()


def _quarter_start(now: datetime) -> datetime:
    return now.replace(minute=now.minute - now.minute % DIGEST_EVERY_MINUTES, second=0, microsecond=0)


def plan(cursor: TodayCursor, newest_notes: int | None, now: datetime, busy: set[str]) -> tuple[list[str], TodayCursor]:
    """Which of today's daily assets to refresh now: the cost report on every landing, the digest once a
    quarter hour has begun since a landing; an asset with a run in progress (`busy`) waits for the next tick."""
    landed = newest_notes is not None and newest_notes > cursor.notes_seen
    due_since = cursor.digest_due_since or (now.isoformat() if landed else None)
    if due_since and datetime.fromisoformat(due_since).date() != now.date():
        due_since = None  # that day is closed by the daily schedule
    refresh, seen = [], cursor.notes_seen
    if landed and catalog.COST_REPORT not in busy:
        refresh.append(catalog.COST_REPORT)
        seen = newest_notes
    if due_since and catalog.DAILY_DIGEST not in busy and _quarter_start(now) > datetime.fromisoformat(due_since):
        refresh.append(catalog.DAILY_DIGEST)
        due_since = None
    return refresh, TodayCursor(seen, due_since)


def _in_progress(instance: dg.DagsterInstance, asset: str, day: str) -> bool:
    runs = dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES, tags={"dagster/partition": day, REFRESH_TAG: asset})
    return instance.get_runs_count(runs) > 0


@dg.sensor(
    job=daily_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes today's cost report when a batch lands, and today's digest at most every 15 minutes.",
)
def todays_refresh(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    now = datetime.now(timezone.utc)
    today = now.date().isoformat()
    newest = context.instance.fetch_materializations(dg.AssetKey(catalog.DIARY_NOTES), limit=1).records
    busy = {asset for asset in (catalog.COST_REPORT, catalog.DAILY_DIGEST) if _in_progress(context.instance, asset, today)}
    refresh, cursor = plan(TodayCursor.from_json(context.cursor), newest[0].storage_id if newest else None, now, busy)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=today, asset_selection=[dg.AssetKey(asset)], tags={REFRESH_TAG: asset})
            for asset in refresh
        ],
        cursor=cursor.to_json(),
        skip_reason=None if refresh else "no batch landed since the last refresh" if not cursor.digest_due_since
        else f"today's digest waits for the next quarter hour (out of date since {cursor.digest_due_since})",
    )

