"""Circuit breakers whose state every step process shares: pybreaker over a small JSON file per provider on
one machine, or over a row per provider in the instance's Postgres on a cluster.

A provider that keeps failing, or says its quota is spent, is skipped by every process until the
breaker's reset timeout has passed; then one trial call decides (pybreaker's half-open state).
"""

import fcntl
import json
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pybreaker

from diary_platform.domain.state_database import StateDatabase
from diary_platform.domain.store.layout import write_text_atomic


class FileBreakerStorage(pybreaker.CircuitBreakerStorage):
    def __init__(self, path: Path):
        super().__init__(path.stem)
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self):
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"state": pybreaker.STATE_CLOSED, "counter": 0, "success_counter": 0, "opened_at": None}

    def _update(self, **changes) -> None:
        with self._locked():
            record = self._read()
            for key, change in changes.items():
                record[key] = change(record[key]) if callable(change) else change
            write_text_atomic(self.path, json.dumps(record))

    @property
    def state(self) -> str:
        return self._read()["state"]

    @state.setter
    def state(self, state: str) -> None:
        self._update(state=state)

    def increment_counter(self) -> None:
        self._update(counter=lambda n: n + 1)

    def reset_counter(self) -> None:
        self._update(counter=0)

    def increment_success_counter(self) -> None:
        self._update(success_counter=lambda n: n + 1)

    def reset_success_counter(self) -> None:
        self._update(success_counter=0)

    @property
    def counter(self) -> int:
        return self._read()["counter"]

    @property
    def success_counter(self) -> int:
        return self._read()["success_counter"]

    @property
    def opened_at(self) -> datetime | None:
        value = self._read()["opened_at"]
        return datetime.fromisoformat(value) if value else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._update(opened_at=value.isoformat())


class PostgresBreakerStorage(pybreaker.CircuitBreakerStorage):
    """One row per provider; counters move by atomic increments, so no failure is lost between machines."""

    def __init__(self, database: StateDatabase, name: str):
        super().__init__(name)
        self.database = database
        database.execute(
            "INSERT INTO diary_breakers (name, state) VALUES (:name, :closed) ON CONFLICT (name) DO NOTHING",
            name=name, closed=pybreaker.STATE_CLOSED,
        )

    def _column(self, column: str):
        return self.database.rows(f"SELECT {column} FROM diary_breakers WHERE name = :name", name=self.name)[0][0]

    def _set(self, assignment: str, **values) -> None:
        self.database.execute(f"UPDATE diary_breakers SET {assignment} WHERE name = :name", name=self.name, **values)

    @property
    def state(self) -> str:
        return self._column("state")

    @state.setter
    def state(self, state: str) -> None:
        self._set("state = :state", state=state)

    def increment_counter(self) -> None:
        self._set("counter = counter + 1")

    def reset_counter(self) -> None:
        self._set("counter = 0")

    def increment_success_counter(self) -> None:
        self._set("success_counter = success_counter + 1")

    def reset_success_counter(self) -> None:
        self._set("success_counter = 0")

    @property
    def counter(self) -> int:
        return self._column("counter")

    @property
    def success_counter(self) -> int:
        return self._column("success_counter")

    @property
    def opened_at(self) -> datetime | None:
        return self._column("opened_at")

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._set("opened_at = :opened_at", opened_at=value)


def breaker_for(storage: pybreaker.CircuitBreakerStorage, fail_max: int, reset_seconds: float, exclude: list) -> pybreaker.CircuitBreaker:
    """A breaker named after its storage's provider. `exclude`: exception types or predicates that say
    nothing about the provider's health."""
    return pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_seconds,
        state_storage=storage,
        name=storage.name,
        exclude=exclude,
        throw_new_error_on_trip=False,
    )
