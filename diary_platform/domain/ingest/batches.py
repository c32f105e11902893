"""Ingest batches: the unit of partitioning. A manifest records what each batch holds and who made it: a file
in the data folder on one machine, a row in the instance's Postgres on a cluster.

The manifest is written before the partition is added, so it doubles as a write-ahead log: a batch
whose partition, run or notes never came about is found from its manifest and resumed (recovery.py).
"""

import fcntl
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from sqlalchemy import text

from diary_platform.domain.ingest.claims import Owner
from diary_platform.domain.state_database import StateDatabase
from diary_platform.domain.store.layout import write_text_atomic

# A batch key reads `035016-20261129-d29243e7`: UTC time to the second first and the maker's random part
# last, so that the UI's partition chips, which keep a key's two ends, show when and which; the day sits
# in the middle. Keys made before this format (`20261129T035016Z-d29243e7`) are still read.
_KEY = re.compile(r"^(?P<time>\d{6})-(?P<day>\d{8})-[0-9a-f]+$")
_EARLIER_KEY = re.compile(r"^(?P<day>\d{8})T(?P<time>\d{6})Z-.+$")


@dataclass(frozen=True)
class BatchItem:
    user: str
    source_path: str
    relative_path: str
    size: int
    mtime_ns: int
    content_sha256: str
    estimated_audio_seconds: float | None = None  # from the header or size (audio_estimate.py); None in older manifests


@dataclass(frozen=True)
class Lease:
    """The process running a batch, since when."""

    owner: Owner
    since: datetime


@dataclass(frozen=True)
class BatchManifest:
    key: str
    created_at: str
    items: tuple[BatchItem, ...] = field(default_factory=tuple)
    owner: Owner | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "created_at": self.created_at,
                "owner": asdict(self.owner) if self.owner else None,
                "items": [asdict(i) for i in self.items],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> "BatchManifest":
        raw = json.loads(text)
        owner = Owner(**raw["owner"]) if raw.get("owner") else None
        return cls(raw["key"], raw["created_at"], tuple(BatchItem(**item) for item in raw["items"]), owner)


def new_batch_key(now: datetime) -> str:
    """Readable in the UI, URL-safe, and unique to its maker (a random part: two makers in one second differ)."""
    return f"{now.astimezone(timezone.utc):%H%M%S-%Y%m%d}-{secrets.token_hex(4)}"


def batch_time(key: str) -> datetime:
    """When a batch was made, from its key; ValueError for a key that no maker of batches wrote."""
    match = _KEY.match(key) or _EARLIER_KEY.match(key)
    if match is None:
        raise ValueError(f"{key!r} is not a batch key")
    return datetime.strptime(match["day"] + match["time"], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


def batch_order(key: str) -> str:
    """A string that sorts batch keys by when they were made (the key itself breaks ties)."""
    return f"{batch_time(key):%Y%m%d%H%M%S}-{key}"


class BatchStore(Protocol):
    """Manifests, leases and give-up records: files in the data folder (FileBatchStore) or rows in Postgres
    (PostgresBatchStore). A missing manifest reads as FileNotFoundError either way."""

    def write(self, manifest: BatchManifest) -> None: ...

    def exists(self, key: str) -> bool: ...

    def read(self, key: str) -> BatchManifest: ...

    def delete(self, key: str) -> None:
        """Forget a batch that never held anything: its manifest and lease."""

    def lease(self, key: str) -> Lease | None:
        """Who is running the batch now (its maker, or whoever resumed it last), and since when."""

    def take_lease(self, key: str, owner: Owner, now: datetime, held: Callable[[Lease], bool]) -> bool:
        """Become the one process that runs the batch, unless `held(lease)` says its holder is still at it."""

    def write_lease(self, key: str, owner: Owner, now: datetime) -> None:
        """The lease of a batch no one else can hold yet: its maker's, written with the manifest."""

    def give_up(self, key: str, attempts: int, last_error: str, now: datetime) -> None:
        """Record that the batch failed `attempts` times and is not run again by itself."""

    def gave_up_keys(self) -> list[str]: ...

    def gave_up(self, key: str) -> dict | None: ...

    def keys_between(self, first: datetime, last: datetime) -> list[str]:
        """Manifests made from `first` to `last` (inclusive), oldest first."""


def _missing(key: str, where: str = "") -> FileNotFoundError:
    return FileNotFoundError(f"there is no manifest for {key!r}{where}: batches come from the landing sensor or `diary run`")


def _lease_json(owner: Owner) -> str:
    return json.dumps(asdict(owner))


def _give_up_record(attempts: int, last_error: str, at: datetime) -> dict:
    return {"attempts": attempts, "last_error": last_error, "at": at.isoformat()}


class FileBatchStore(BatchStore):
    """One folder per day of manifests, each with its lease and give-up record beside it (a single machine)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        created = batch_time(key)
        return self.root / f"{created:%Y}" / f"{created:%m}" / f"{created:%d}" / f"{key}.json"

    def write(self, manifest: BatchManifest) -> None:
        write_text_atomic(self.path(manifest.key), manifest.to_json())

    def exists(self, key: str) -> bool:
        try:
            return self.path(key).exists()
        except ValueError:
            return False

    def read(self, key: str) -> BatchManifest:
        try:
            path = self.path(key)
        except ValueError:
            raise _missing(key) from None
        if not path.exists():
            raise _missing(key, f" at {path}")
        return BatchManifest.from_json(path.read_text())

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        self._lease_path(key).unlink(missing_ok=True)

    def _lease_path(self, key: str) -> Path:
        return self.path(key).with_name(f"{key}.lease")

    def lease(self, key: str) -> Lease | None:
        try:
            raw = json.loads(self._lease_path(key).read_text())
        except FileNotFoundError:
            return None
        return Lease(Owner(**raw["owner"]), datetime.fromisoformat(raw["since"]))

    def take_lease(self, key: str, owner: Owner, now: datetime, held: Callable[[Lease], bool]) -> bool:
        path = self._lease_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.lease(key)
            if current is not None and current.owner != owner and held(current):
                return False
            self.write_lease(key, owner, now)
            return True

    def write_lease(self, key: str, owner: Owner, now: datetime) -> None:
        write_text_atomic(self._lease_path(key), json.dumps({"owner": asdict(owner), "since": now.isoformat()}))

    def give_up(self, key: str, attempts: int, last_error: str, now: datetime) -> None:
        write_text_atomic(self.path(key).with_name(f"{key}.gave_up"), json.dumps(_give_up_record(attempts, last_error, now)))

    def gave_up_keys(self) -> list[str]:
        return sorted(path.name.removesuffix(".gave_up") for path in self.root.rglob("*.gave_up")) if self.root.exists() else []

    def gave_up(self, key: str) -> dict | None:
        try:
            return json.loads(self.path(key).with_name(f"{key}.gave_up").read_text())
        except FileNotFoundError:
            return None

    def keys_between(self, first: datetime, last: datetime) -> list[str]:
        """Reads only the folders of the days from `first` to `last`."""
        if not self.root.exists():
            return []
        first, last = first.astimezone(timezone.utc).replace(microsecond=0), last.astimezone(timezone.utc)
        keys = []
        for day_dir in sorted(self.root.glob("[0-9]*/[0-9]*/[0-9]*")):
            if f"{first:%Y%m%d}" <= "".join(day_dir.relative_to(self.root).parts) <= f"{last:%Y%m%d}":
                keys.extend(p.stem for p in day_dir.glob("*.json") if first <= batch_time(p.stem) <= last)
        return sorted(keys, key=batch_order)


class PostgresBatchStore(BatchStore):
    """Manifests as rows indexed by the time in their key, leases taken under a row lock, so that every
    machine of a deployment sees the same batches and exactly one process runs each."""

    def __init__(self, database: StateDatabase):
        self.database = database

    def write(self, manifest: BatchManifest) -> None:
        self.database.execute(
            "INSERT INTO diary_batches (batch_key, created, manifest) VALUES (:key, :created, CAST(:manifest AS jsonb))"
            " ON CONFLICT (batch_key) DO UPDATE SET manifest = excluded.manifest",
            key=manifest.key, created=batch_time(manifest.key), manifest=manifest.to_json(),
        )

    def exists(self, key: str) -> bool:
        return bool(self.database.rows("SELECT 1 FROM diary_batches WHERE batch_key = :key", key=key))

    def read(self, key: str) -> BatchManifest:
        rows = self.database.rows("SELECT manifest FROM diary_batches WHERE batch_key = :key", key=key)
        if not rows:
            raise _missing(key, f" in {self.database.location}")
        return BatchManifest.from_json(json.dumps(rows[0].manifest))

    def delete(self, key: str) -> None:
        with self.database.transaction() as connection:
            connection.execute(text("DELETE FROM diary_batches WHERE batch_key = :key"), {"key": key})
            connection.execute(text("DELETE FROM diary_batch_leases WHERE batch_key = :key"), {"key": key})

    def lease(self, key: str) -> Lease | None:
        rows = self.database.rows("SELECT owner, since FROM diary_batch_leases WHERE batch_key = :key", key=key)
        return Lease(Owner(**rows[0].owner), rows[0].since) if rows else None

    def take_lease(self, key: str, owner: Owner, now: datetime, held: Callable[[Lease], bool]) -> bool:
        with self.database.transaction() as connection:
            inserted = connection.execute(
                text("INSERT INTO diary_batch_leases (batch_key, owner, since) VALUES (:key, CAST(:owner AS jsonb), :since)"
                     " ON CONFLICT (batch_key) DO NOTHING"),
                {"key": key, "owner": _lease_json(owner), "since": now},
            ).rowcount
            if inserted:
                return True
            row = connection.execute(
                text("SELECT owner, since FROM diary_batch_leases WHERE batch_key = :key FOR UPDATE"), {"key": key}
            ).one()
            current = Lease(Owner(**row.owner), row.since)
            if current.owner != owner and held(current):
                return False
            connection.execute(
                text("UPDATE diary_batch_leases SET owner = CAST(:owner AS jsonb), since = :since WHERE batch_key = :key"),
                {"key": key, "owner": _lease_json(owner), "since": now},
            )
            return True

    def write_lease(self, key: str, owner: Owner, now: datetime) -> None:
        self.database.execute(
            "INSERT INTO diary_batch_leases (batch_key, owner, since) VALUES (:key, CAST(:owner AS jsonb), :since)"
            " ON CONFLICT (batch_key) DO UPDATE SET owner = excluded.owner, since = excluded.since",
            key=key, owner=_lease_json(owner), since=now,
        )

    def give_up(self, key: str, attempts: int, last_error: str, now: datetime) -> None:
        self.database.execute(
            "INSERT INTO diary_batch_give_ups (batch_key, attempts, last_error, given_up_at) VALUES (:key, :attempts, :error, :at)"
            " ON CONFLICT (batch_key) DO UPDATE SET attempts = excluded.attempts, last_error = excluded.last_error,"
            " given_up_at = excluded.given_up_at",
            key=key, attempts=attempts, error=last_error, at=now,
        )

    def gave_up_keys(self) -> list[str]:
        return [row.batch_key for row in self.database.rows("SELECT batch_key FROM diary_batch_give_ups ORDER BY batch_key")]

    def gave_up(self, key: str) -> dict | None:
        rows = self.database.rows("SELECT attempts, last_error, given_up_at FROM diary_batch_give_ups WHERE batch_key = :key", key=key)
        return _give_up_record(*rows[0]) if rows else None

    def keys_between(self, first: datetime, last: datetime) -> list[str]:
        rows = self.database.rows(
            "SELECT batch_key FROM diary_batches WHERE created >= :first AND created <= :last ORDER BY created, batch_key",
            first=first.astimezone(timezone.utc).replace(microsecond=0), last=last,
        )
        return [row.batch_key for row in rows]
