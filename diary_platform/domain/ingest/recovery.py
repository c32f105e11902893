"""Resuming what a crash, a kill or a pre-emption left half done.

"Done" is what Dagster recorded: a batch is done when its `diary_notes` materialized (or, once retention
has deleted its runs, when its notes table is stored). A claim only says who took a recording. Every batch that is not done is one of:
- running: a run of it is queued or running, or the process holding its lease (the one that made it, or
  the last one that resumed it) is still alive;
- stranded: none of that; whoever finds it resumes it (`diary run` with the same files, `diary recover`,
  or the recovery sensor, which relaunches it as a new run);
- given up: it failed `max_attempts` times; its recordings are quarantined as `gave_up` with the last
  error, and the same content dropped again is taken as new.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from diary_platform.domain.ingest.batches import BatchManifest, BatchStore, Lease
from diary_platform.domain.ingest.claims import Owner

# The lease of a process that hands a new batch over to Dagster (the landing sensor, the re-drive job) only
# covers the moment between writing the manifest and Dagster taking the run request.
SENSOR_ROLE, REDRIVE_JOB_ROLE = "sensor", "redrive_job"
HANDOVER_ROLES = frozenset({SENSOR_ROLE, REDRIVE_JOB_ROLE})
SENSOR_GRACE = timedelta(minutes=2)
# A lease held by a process on another machine cannot be checked from here; it lapses after a run's longest time.
FOREIGN_LEASE = timedelta(hours=6)
# Stranded batches made this long ago or less are resumed by the recovery sensor; retention keeps batches longer.
RECOVERY_WINDOW = timedelta(days=7)
MAX_ATTEMPTS = 3


class BatchState(str, Enum):
    DONE = "done"
    RUNNING = "running"
    STRANDED = "stranded"
    GAVE_UP = "gave_up"


@dataclass(frozen=True)
class BatchRuns:
    """What the Dagster instance knows of one batch."""

    done: bool
    live: bool
    failures: int
    last_error: str | None


def lease_held(lease: Lease, now: datetime) -> bool:
    """Whether the lease's holder may still be running the batch."""
    if lease.owner.role in HANDOVER_ROLES:
        return now - lease.since < SENSOR_GRACE
    alive = lease.owner.alive()
    return alive if alive is not None else now - lease.since < FOREIGN_LEASE


class Recovery:
    def __init__(self, batches: BatchStore, runs_of: Callable[[str], BatchRuns], max_attempts: int = MAX_ATTEMPTS):
        self.batches = batches
        self.runs_of = runs_of
        self.max_attempts = max_attempts

    def state(self, key: str, now: datetime) -> BatchState:
        if self.batches.gave_up(key) is not None:
            return BatchState.GAVE_UP
        runs = self.runs_of(key)
        if runs.done:
            return BatchState.DONE
        lease = self.batches.lease(key)
        if runs.live or (lease is not None and lease_held(lease, now)):
            return BatchState.RUNNING
        return BatchState.STRANDED

    def take(self, key: str, owner: Owner, now: datetime) -> bool:
        """Hold the lease of a stranded batch, to resume it; False when another process holds it."""
        return self.batches.take_lease(key, owner, now, lambda lease: lease_held(lease, now))

    def stranded(self, since: datetime, now: datetime) -> Iterator[tuple[BatchManifest, BatchRuns]]:
        """Stranded batches made since `since`, oldest first; a batch that failed too often is given up instead."""
        for key in self.batches.keys_between(since, now):
            if self.state(key, now) is not BatchState.STRANDED:
                continue
            runs = self.runs_of(key)
            if runs.failures >= self.max_attempts:
                self.batches.give_up(key, runs.failures, runs.last_error or "the run failed", now)
                continue
            yield self.batches.read(key), runs
