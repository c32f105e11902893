"""Ingest batches: the unit of partitioning. A manifest file records what each batch holds and who made it.

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

from diary_platform.domain.ingest.claims import Owner
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


class BatchStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        created = batch_time(key)
        return self.root / f"{created:%Y}" / f"{created:%m}" / f"{created:%d}" / f"{key}.json"

    def write(self, manifest: BatchManifest) -> Path:
        target = self.path(manifest.key)
        write_text_atomic(target, manifest.to_json())
        return target

    def exists(self, key: str) -> bool:
        try:
            return self.path(key).exists()
        except ValueError:
            return False

    def read(self, key: str) -> BatchManifest:
        try:
            path = self.path(key)
        except ValueError:
            raise FileNotFoundError(f"there is no manifest for {key!r}: batches come from the landing sensor or `diary run`") from None
        if not path.exists():
            raise FileNotFoundError(f"there is no manifest for {key!r} at {path}: batches come from the landing sensor or `diary run`")
        return BatchManifest.from_json(path.read_text())

    def _lease_path(self, key: str) -> Path:
        return self.path(key).with_name(f"{key}.lease")

    def lease(self, key: str) -> Lease | None:
        """Who is running the batch now (its maker, or whoever resumed it last), and since when."""
        try:
            raw = json.loads(self._lease_path(key).read_text())
        except FileNotFoundError:
            return None
        return Lease(Owner(**raw["owner"]), datetime.fromisoformat(raw["since"]))

    def take_lease(self, key: str, owner: Owner, now: datetime, held: Callable[[Lease], bool]) -> bool:
        """Become the one process that runs the batch, unless `held(lease)` says its holder is still at it."""
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
        """The lease of a batch no one else can hold yet: its maker's, written with the manifest."""
        write_text_atomic(self._lease_path(key), json.dumps({"owner": asdict(owner), "since": now.isoformat()}))

    def give_up(self, key: str, attempts: int, last_error: str, now: datetime) -> None:
        """Record that the batch failed `attempts` times and is not run again by itself."""
        write_text_atomic(
            self.path(key).with_name(f"{key}.gave_up"),
            json.dumps({"attempts": attempts, "last_error": last_error, "at": now.isoformat()}),
        )

    def gave_up_keys(self) -> list[str]:
        return sorted(path.name.removesuffix(".gave_up") for path in self.root.rglob("*.gave_up")) if self.root.exists() else []

    def gave_up(self, key: str) -> dict | None:
        try:
            return json.loads(self.path(key).with_name(f"{key}.gave_up").read_text())
        except FileNotFoundError:
            return None

    def keys_between(self, first: datetime, last: datetime) -> list[str]:
        """Manifests made from `first` to `last` (inclusive), reading only those days' folders, oldest first."""
        if not self.root.exists():
            return []
        first, last = first.astimezone(timezone.utc).replace(microsecond=0), last.astimezone(timezone.utc)
        keys = []
        for day_dir in sorted(self.root.glob("[0-9]*/[0-9]*/[0-9]*")):
            if f"{first:%Y%m%d}" <= "".join(day_dir.relative_to(self.root).parts) <= f"{last:%Y%m%d}":
                keys.extend(p.stem for p in day_dir.glob("*.json") if first <= batch_time(p.stem) <= last)
        return sorted(keys, key=batch_order)
