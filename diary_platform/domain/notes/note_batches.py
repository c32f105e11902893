"""Provider batches of notes that wait: what was submitted, for which recordings, and where it stands.

A record is made before its batch is sent to the provider (status `submitting`), gets the provider's batch
id as soon as the provider answers (`open`), is marked `ended` by the poller when the provider is done with
it, and `collected` once its notes are in the `diary_notes` table. Its id is derived from what it holds
(the batch partition, the provider and model, each recording and its transcript), so a step that runs
again finds the record it made instead of submitting the same work twice. Files (one JSON per record)
or Postgres (`diary_note_batches`), like the rest of the shared state.
"""

import fcntl
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from diary_platform.domain.state_database import StateDatabase
from diary_platform.domain.store.layout import write_text_atomic

SUBMITTING, OPEN, ENDED, COLLECTED = "submitting", "open", "ended", "collected"
POLLED = (OPEN, ENDED)


@dataclass(frozen=True)
class NoteBatch:
    id: str
    batch_key: str
    provider: str
    model: str
    recording_ids: list[str]
    created_at: datetime
    next_poll_at: datetime
    status: str = SUBMITTING
    remote_id: str | None = None
    outcome: str | None = None
    polls: int = 0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "created_at": self.created_at.isoformat(), "next_poll_at": self.next_poll_at.isoformat()})

    @classmethod
    def from_json(cls, text: str) -> "NoteBatch":
        raw = json.loads(text)
        return cls(**{**raw, "created_at": datetime.fromisoformat(raw["created_at"]), "next_poll_at": datetime.fromisoformat(raw["next_poll_at"])})


def note_batch_id(batch_key: str, provider: str, model: str, transcripts: dict[str, str]) -> str:
    """The same work (partition, provider, model, recordings and their transcripts) always has the same id."""
    digest = hashlib.sha256(json.dumps([batch_key, provider, model, sorted(transcripts.items())]).encode()).hexdigest()
    return f"nb-{digest[:24]}"


class NoteBatches(Protocol):
    def get(self, batch_id: str) -> NoteBatch | None: ...

    def create(self, batch: NoteBatch) -> NoteBatch:
        """Store `batch` unless a record with its id exists; the stored record either way."""
        ...

    def save(self, batch: NoteBatch) -> None:
        """Replace the record, unless it is already `collected` (a late poll never reopens finished work)."""
        ...

    def due(self, now: datetime, limit: int) -> list[NoteBatch]:
        """Open or ended records whose next poll is due, the most overdue first."""
        ...


class FileNoteBatches(NoteBatches):
    """One JSON file per record, written under a lock (a single machine)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, batch_id: str) -> Path:
        return self.root / f"{batch_id}.json"

    def get(self, batch_id: str) -> NoteBatch | None:
        try:
            return NoteBatch.from_json(self._path(batch_id).read_text())
        except FileNotFoundError:
            return None

    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / ".lock", "a+")
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def create(self, batch: NoteBatch) -> NoteBatch:
        with self._locked():
            stored = self.get(batch.id)
            if stored is not None:
                return stored
            write_text_atomic(self._path(batch.id), batch.to_json())
            return batch

    def save(self, batch: NoteBatch) -> None:
        with self._locked():
            stored = self.get(batch.id)
            if stored is None or stored.status != COLLECTED:
                write_text_atomic(self._path(batch.id), batch.to_json())

    def due(self, now: datetime, limit: int) -> list[NoteBatch]:
        records = [NoteBatch.from_json(path.read_text()) for path in self.root.glob("nb-*.json")] if self.root.exists() else []
        waiting = [r for r in records if r.status in POLLED and r.next_poll_at <= now]
        return sorted(waiting, key=lambda r: r.next_poll_at)[:limit]


class PostgresNoteBatches(NoteBatches):
    """One row per record; the status and next poll time are columns so that `due` is an index scan."""

    def __init__(self, database: StateDatabase):
        self.database = database

    def get(self, batch_id: str) -> NoteBatch | None:
        rows = self.database.rows("SELECT record FROM diary_note_batches WHERE id = :id", id=batch_id)
        return _from_row(rows[0].record) if rows else None

    def create(self, batch: NoteBatch) -> NoteBatch:
        self.database.execute(
            "INSERT INTO diary_note_batches (id, status, next_poll_at, record) VALUES (:id, :status, :next_poll_at, CAST(:record AS jsonb))"
            " ON CONFLICT (id) DO NOTHING",
            id=batch.id, status=batch.status, next_poll_at=batch.next_poll_at, record=batch.to_json(),
        )
        return self.get(batch.id)

    def save(self, batch: NoteBatch) -> None:
        self.database.execute(
            "UPDATE diary_note_batches SET status = :status, next_poll_at = :next_poll_at, record = CAST(:record AS jsonb)"
            " WHERE id = :id AND status <> :collected",
            id=batch.id, status=batch.status, next_poll_at=batch.next_poll_at, record=batch.to_json(), collected=COLLECTED,
        )

    def due(self, now: datetime, limit: int) -> list[NoteBatch]:
        rows = self.database.rows(
            "SELECT record FROM diary_note_batches WHERE status IN (:open, :ended) AND next_poll_at <= :now"
            " ORDER BY next_poll_at LIMIT :limit",
            open=OPEN, ended=ENDED, now=now, limit=limit,
        )
        return [_from_row(row.record) for row in rows]


def _from_row(record) -> NoteBatch:
    return NoteBatch.from_json(record if isinstance(record, str) else json.dumps(record))
