"""Circuit breakers whose state every step process shares: pybreaker over a small JSON file per provider.

A provider that keeps failing, or says its quota is spent, is skipped by every process until the
breaker's reset timeout has passed; then one trial call decides (pybreaker's half-open state).
"""

import fcntl
import json
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pybreaker

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


def breaker_for(
    state_dir: Path, provider: str, fail_max: int, reset_seconds: float, exclude: list
) -> pybreaker.CircuitBreaker:
    """`exclude`: exception types or predicates that say nothing about the provider's health."""
    storage = FileBreakerStorage(Path(state_dir) / "breakers" / f"{provider}.json")
    return pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_seconds,
        state_storage=storage,
        name=provider,
        exclude=exclude,
        throw_new_error_on_trip=False,
    )

