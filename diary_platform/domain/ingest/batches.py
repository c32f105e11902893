"""Ingest batches: the unit of partitioning. A manifest file records what each batch holds.

The manifest is written before the partition is added, so it doubles as a write-ahead log:
a sensor tick that dies after writing it is recovered by the next tick (see landing.py).
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from diary_platform.domain.store.layout import write_text_atomic

BATCH_KEY_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class BatchItem:
    user: str
    source_path: str
    relative_path: str
    size: int
    mtime_ns: int
    content_sha256: str


@dataclass(frozen=True)
class BatchManifest:
    key: str
    created_at: str
    items: tuple[BatchItem, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps(
            {"key": self.key, "created_at": self.created_at, "items": [asdict(i) for i in self.items]},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> "BatchManifest":
        raw = json.loads(text)
        return cls(raw["key"], raw["created_at"], tuple(BatchItem(**item) for item in raw["items"]))


def new_batch_key(now: datetime, items: tuple[BatchItem, ...]) -> str:
    """Sortable by creation time, URL-safe, and unique per content set (no commas, no slashes)."""
    content = "\n".join(sorted(item.content_sha256 for item in items))
    suffix = hashlib.sha256(content.encode()).hexdigest()[:8]
    return f"{now.astimezone(timezone.utc).strftime(BATCH_KEY_TIME_FORMAT)}-{suffix}"


def batch_time(key: str) -> datetime:
    return datetime.strptime(key.split("-", 1)[0], BATCH_KEY_TIME_FORMAT).replace(tzinfo=timezone.utc)


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

    def read(self, key: str) -> BatchManifest:
        path = self.path(key)
        if not path.exists():
            raise FileNotFoundError(f"no manifest for batch {key!r} at {path}")
        return BatchManifest.from_json(path.read_text())

    def keys_after(self, last_key: str | None, since: datetime) -> list[str]:
        """Manifests newer than `last_key`, reading only the day folders from its day (or `since`) on."""
        if not self.root.exists():
            return []
        first_day = batch_time(last_key) if last_key else since
        since_day = first_day.astimezone(timezone.utc).strftime("%Y%m%d")
        keys = []
        for day_dir in sorted(self.root.glob("[0-9]*/[0-9]*/[0-9]*")):
            day = "".join(day_dir.relative_to(self.root).parts)
            if day < since_day:
                continue
            keys.extend(p.stem for p in day_dir.glob("*.json") if last_key is None or p.stem > last_key)
        return sorted(keys)
