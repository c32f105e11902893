"""The poller of provider batches: bounded work per call, backing off per batch, never losing one.

An open batch is asked where it stands when its next poll is due, then again after a doubling wait (one
minute up to half an hour), also while its provider cannot be reached; one the provider has not ended 25
hours after it was made (the providers' window is 24) is cancelled and treated as ended, so that its
notes are written another way. An ended batch is handed back for collecting while the stored notes table still has rows
waiting for it, again after half an hour if a collection did not land, and is marked `collected` once none
wait any more: the stored table, not the poller, says when the work is done.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from diary_platform.domain.notes.note_batches import COLLECTED, ENDED, OPEN, NoteBatch, NoteBatches
from diary_platform.domain.notes.providers import ProviderFailure
from diary_platform.domain.notes.router import FIRST_POLL_SECONDS, NoteRouter

MAX_POLL_SECONDS = 1800.0
COLLECT_AGAIN_SECONDS = 1800.0
OVERDUE_AFTER = timedelta(hours=25)


@dataclass
class PollRound:
    """What one round did: the batches to collect now, and how many were asked, still open or unreachable."""

    to_collect: list[NoteBatch] = field(default_factory=list)
    asked: int = 0
    still_open: int = 0
    unreachable: int = 0
    finished: int = 0


def next_poll(record: NoteBatch, now: datetime) -> datetime:
    return now + timedelta(seconds=min(FIRST_POLL_SECONDS * 2**record.polls, MAX_POLL_SECONDS))


def poll_round(
    router: NoteRouter,
    batches: NoteBatches,
    waiting_rows: Callable[[NoteBatch], int | None],
    now: datetime,
    limit: int = 20,
    seconds: float = 30.0,
) -> PollRound:
    """At most `limit` due batches, within about `seconds`. `waiting_rows(record)`: how many rows of the
    stored notes table wait for the record, None while its table is not stored yet."""
    round_ = PollRound()
    deadline = time.monotonic() + seconds
    for record in batches.due(now, limit):
        if time.monotonic() > deadline:
            break
        if record.status == OPEN:
            round_.asked += 1
            try:
                state = router.poll(record)
            except ProviderFailure:
                if now - record.created_at < OVERDUE_AFTER:
                    round_.unreachable += 1
                    batches.save(replace(record, polls=record.polls + 1, next_poll_at=next_poll(record, now)))
                    continue
                state = None
            if state is not None and not state.ended:
                if now - record.created_at < OVERDUE_AFTER:
                    round_.still_open += 1
                    batches.save(replace(record, polls=record.polls + 1, next_poll_at=next_poll(record, now)))
                    continue
                router.cancel(record)
            record = replace(record, status=ENDED, outcome=state.outcome if state and state.ended else "overdue", polls=0)
        waiting = waiting_rows(record)
        if waiting == 0:
            round_.finished += 1
            batches.save(replace(record, status=COLLECTED))
            continue
        if waiting is None:
            batches.save(replace(record, next_poll_at=now + timedelta(seconds=FIRST_POLL_SECONDS)))
            continue
        round_.to_collect.append(record)
        batches.save(replace(record, polls=record.polls + 1, next_poll_at=now + timedelta(seconds=COLLECT_AGAIN_SECONDS)))
    return round_
