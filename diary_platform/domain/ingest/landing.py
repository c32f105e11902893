"""Turning a landing folder into ingest batches, a bounded amount of work at a time.

One `tick` (called by the Dagster sensor, or by tests directly):
1. re-emits manifests written by an earlier tick that died before its result was committed;
2. looks at no more than `max_files_scanned` landing entries, resuming where the last tick stopped;
3. takes a file only when its size and mtime are unchanged since it was last seen (no half-written
   uploads) and the claims has not seen it (never the same file twice);
4. hashes stable files within a byte budget and drops content that was ingested before;
5. closes batches when full (files or bytes) or when their oldest file has waited long enough.

The cursor holds only bounded state: files waiting to settle, files waiting for a batch to fill,
where the scan resumes, and the last batch emitted.
"""

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from diary_platform.domain.ingest.batches import BatchItem, BatchManifest, BatchStore, new_batch_key
from diary_platform.domain.store.hashing import sha256_file
from diary_platform.domain.ingest.claims import LandingFileKey, Claims

DEFAULT_USER = "default"
T = TypeVar("T")


@dataclass(frozen=True)
class BatchLimits:
    max_files: int = 16
    max_bytes: int = 512 * 1024 * 1024
    max_wait_seconds: float = 30.0
    max_files_scanned: int = 5000
    max_bytes_hashed: int = 1024 * 1024 * 1024
    max_batches_per_tick: int = 64


@dataclass(frozen=True)
class Waiting:
    """A hashed upload waiting for its batch to close, and since when (ISO time)."""

    item: BatchItem
    ready_at: str


@dataclass
class LandingCursor:
    pending: dict[str, list[int]] = field(default_factory=dict)
    waiting: list[Waiting] = field(default_factory=list)
    resume_after: str = ""
    last_batch: str | None = None

    def to_json(self) -> str:
        raw = {**asdict(self), "waiting": [{**asdict(w.item), "ready_at": w.ready_at} for w in self.waiting]}
        return json.dumps(raw, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "LandingCursor":
        if not text:
            return cls()
        raw = json.loads(text)
        waiting = [Waiting(BatchItem(**{k: v for k, v in w.items() if k != "ready_at"}), w["ready_at"]) for w in raw.pop("waiting")]
        return cls(waiting=waiting, **raw)


@dataclass(frozen=True)
class StableFile:
    """A landing file whose size and mtime have not changed since the last tick: finished uploading."""

    relative_path: str
    absolute_path: str
    key: LandingFileKey


@dataclass(frozen=True)
class Scan:
    """What one bounded pass over the landing folder saw."""

    pending: dict[str, list[int]]
    stable: list[StableFile]
    scanned: int
    refused: int
    resume_after: str


@dataclass(frozen=True)
class TickResult:
    batches: list[BatchManifest]
    cursor: LandingCursor
    files_scanned: int
    duplicates: int
    refused: int


def _is_candidate_name(name: str) -> bool:
    """Hidden and temporary names are how uploaders mark files still being written."""
    return not name.startswith(".") and not name.endswith((".part", ".tmp", ".crdownload"))


def _walk_sorted(root: Path, relative: tuple[str, ...] = ()) -> Iterator[tuple[str, os.DirEntry]]:
    """Regular files and symlinks under `root` in the string order of their relative paths, lazily.

    Symlinks are yielded (for the scan to refuse and count), never followed.

    A folder sorts as its name plus "/", so `a-b` comes before `a/x` exactly as the strings compare;
    the scan's resume point relies on that.
    """
    try:
        entries = sorted(
            os.scandir(root.joinpath(*relative)),
            key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name,
        )
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in entries:
        if not _is_candidate_name(entry.name):
            continue
        if entry.is_symlink():
            yield "/".join((*relative, entry.name)), entry
        elif entry.is_dir(follow_symlinks=False):
            yield from _walk_sorted(root, (*relative, entry.name))
        elif entry.is_file(follow_symlinks=False):
            yield "/".join((*relative, entry.name)), entry


def _user_of(relative_path: str) -> str:
    parts = relative_path.split("/")
    return parts[0] if len(parts) > 1 else DEFAULT_USER


def commit_batch(
    items: list[BatchItem],
    now: datetime,
    batch_store: BatchStore,
    claims: Claims,
    file_keys: dict[str, LandingFileKey] | None = None,
) -> BatchManifest | None:
    """Write the manifest first (the write-ahead log), then claim contents; lost claims drop items."""
    manifest = BatchManifest(new_batch_key(now, tuple(items)), now.isoformat(), tuple(items))
    batch_store.write(manifest)
    kept = [i for i in items if _claim(i, manifest.key, claims, file_keys)]
    if len(kept) != len(items):
        if not kept:
            batch_store.path(manifest.key).unlink()
            return None
        manifest = BatchManifest(manifest.key, manifest.created_at, tuple(kept))
        batch_store.write(manifest)
    return manifest


def _claim(
    item: BatchItem, batch_key: str, claims: Claims, file_keys: dict[str, LandingFileKey] | None
) -> bool:
    claimed = claims.claim_content(item.content_sha256, batch_key, item.source_path)
    owner = batch_key if claimed else claims.content_batch(item.content_sha256)
    if file_keys and item.source_path in file_keys:
        claims.mark_file_taken(file_keys[item.source_path], item.content_sha256, owner)
    return claimed or owner == batch_key


class LandingScanner:
    def __init__(
        self,
        landing_root: Path,
        batch_store: BatchStore,
        claims: Claims,
        limits: BatchLimits,
        is_emitted: Callable[[str], bool] = lambda key: False,
    ):
        self.landing_root = Path(landing_root)
        self.batch_store = batch_store
        self.claims = claims
        self.limits = limits
        self.is_emitted = is_emitted

    def tick(self, cursor: LandingCursor, now: datetime) -> TickResult:
        recovered = self._recover(cursor, now)
        scan = self._scan(cursor)
        waiting, duplicates = self._hash_new(scan, cursor.waiting, now)
        closed, waiting = self._close_batches(waiting, now)
        batches = recovered + closed
        new_cursor = LandingCursor(
            pending=scan.pending,
            waiting=waiting,
            resume_after=scan.resume_after,
            last_batch=max([b.key for b in batches], default=cursor.last_batch),
        )
        return TickResult(batches, new_cursor, scan.scanned, duplicates, scan.refused)

    def _recover(self, cursor: LandingCursor, now: datetime) -> list[BatchManifest]:
        """Manifests written after the last emitted batch whose partition never got added."""
        recovered = []
        for key in self.batch_store.keys_after(cursor.last_batch, since=now):
            if self.is_emitted(key):
                continue
            manifest = self.batch_store.read(key)
            for item in manifest.items:
                file_key = self._file_key(item)
                self.claims.claim_content(item.content_sha256, key, item.source_path)
                self.claims.mark_file_taken(file_key, item.content_sha256, key)
            recovered.append(manifest)
        return recovered

    def _file_key(self, item: BatchItem) -> LandingFileKey:
        return LandingFileKey(item.user, item.relative_path, item.size, item.mtime_ns)

    def _scan(self, cursor: LandingCursor) -> Scan:
        start = cursor.resume_after
        waiting_paths = {w.item.relative_path for w in cursor.waiting}
        seen: dict[str, list[int]] = {}
        stable: list[StableFile] = []
        scanned = 0
        refused = 0
        last = ""
        exhausted = True
        for relative_path, entry in _walk_sorted(self.landing_root):
            if relative_path <= start:
                continue
            if scanned >= self.limits.max_files_scanned:
                exhausted = False
                break
            scanned += 1
            last = relative_path
            if entry.is_symlink():
                refused += 1
                continue
            if relative_path in waiting_paths:
                continue
            stat = entry.stat(follow_symlinks=False)
            observed = [stat.st_size, stat.st_mtime_ns]
            key = LandingFileKey(_user_of(relative_path), relative_path, *observed)
            if self.claims.file_taken(key):
                continue
            if cursor.pending.get(relative_path) == observed:
                stable.append(StableFile(relative_path, entry.path, key))
            else:
                seen[relative_path] = observed
        end = last if not exhausted else None
        untouched = {
            path: observed
            for path, observed in cursor.pending.items()
            if not (path > start and (end is None or path <= end))
        }
        return Scan({**untouched, **seen}, stable, scanned, refused, last if not exhausted else "")

    def _hash_new(self, scan: Scan, waiting: list[Waiting], now: datetime) -> tuple[list[Waiting], int]:
        """Hash the stable files (within the byte budget; the rest wait for the next tick) and queue new content."""
        waiting = list(waiting)
        waiting_hashes = {w.item.content_sha256 for w in waiting}
        hashed_bytes = 0
        duplicates = 0
        for stable in scan.stable:
            key = stable.key
            if hashed_bytes and hashed_bytes + key.size > self.limits.max_bytes_hashed:
                scan.pending[stable.relative_path] = [key.size, key.mtime_ns]
                continue
            hashed_bytes += key.size
            content_sha256 = sha256_file(Path(stable.absolute_path))
            owner = self.claims.content_batch(content_sha256)
            if owner is not None or content_sha256 in waiting_hashes:
                duplicates += 1
                self.claims.mark_file_taken(key, content_sha256, owner)
                continue
            waiting_hashes.add(content_sha256)
            item = BatchItem(key.user, stable.absolute_path, stable.relative_path, key.size, key.mtime_ns, content_sha256)
            waiting.append(Waiting(item, now.isoformat()))
        return waiting, duplicates

    def _close_batches(self, waiting: list[Waiting], now: datetime) -> tuple[list[BatchManifest], list[Waiting]]:
        closed: list[BatchManifest] = []
        queue = sorted(waiting, key=lambda w: w.ready_at)
        while queue and len(closed) < self.limits.max_batches_per_tick:
            oldest_wait = now - datetime.fromisoformat(queue[0].ready_at)
            total_bytes = sum(w.item.size for w in queue)
            full = len(queue) >= self.limits.max_files or total_bytes >= self.limits.max_bytes
            if not full and oldest_wait < timedelta(seconds=self.limits.max_wait_seconds):
                break
            chunk = list(_take_chunk(queue, self.limits, size=lambda w: w.item.size))
            queue = queue[len(chunk) :]
            items = [w.item for w in chunk]
            file_keys = {i.source_path: self._file_key(i) for i in items}
            manifest = commit_batch(items, now, self.batch_store, self.claims, file_keys)
            if manifest is not None:
                closed.append(manifest)
        return closed, queue


def _take_chunk(queue: Iterable[T], limits: BatchLimits, size: Callable[[T], int]) -> Iterator[T]:
    """The longest prefix within the file and byte limits, and never an empty batch."""
    count = 0
    total = 0
    for entry in queue:
        if count and (count >= limits.max_files or total + size(entry) > limits.max_bytes):
            return
        count += 1
        total += size(entry)
        yield entry


@dataclass(frozen=True)
class KnownFile:
    path: Path
    content_sha256: str
    batch_key: str | None


def batch_files(
    files: list[Path],
    user: str,
    now: datetime,
    batch_store: BatchStore,
    claims: Claims,
    limits: BatchLimits,
) -> tuple[list[BatchManifest], list[KnownFile]]:
    """Batches for files handed over directly (the CLI); content ingested before is returned as known."""
    fresh: list[BatchItem] = []
    known: list[KnownFile] = []
    hashes: set[str] = set()
    for path in files:
        stat = path.stat()
        content_sha256 = sha256_file(path)
        owner = claims.content_batch(content_sha256)
        if owner is not None or content_sha256 in hashes:
            known.append(KnownFile(path, content_sha256, owner))
            continue
        hashes.add(content_sha256)
        fresh.append(BatchItem(user, str(path.resolve()), path.name, stat.st_size, stat.st_mtime_ns, content_sha256))
    manifests = []
    while fresh:
        chunk = list(_take_chunk(fresh, limits, size=lambda item: item.size))
        fresh = fresh[len(chunk) :]
        manifest = commit_batch(chunk, now, batch_store, claims)
        if manifest is not None:
            manifests.append(manifest)
    resolved = [KnownFile(k.path, k.content_sha256, k.batch_key or claims.content_batch(k.content_sha256)) for k in known]
    return manifests, resolved
