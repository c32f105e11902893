"""Turning uploads into ingest batches: the landing folder a bounded amount at a time, or files handed to the CLI.

One `tick` (called by the Dagster sensor, or by tests directly):
1. looks at no more than `max_files_scanned` landing entries, resuming where the last tick stopped;
2. takes a file only when its size and mtime are unchanged since it was last seen (no half-written
   uploads) and no claim has it (never the same file twice);
3. hashes stable files within a byte budget; content already claimed by a batch that is done, running or
   to be resumed is a duplicate (recovery finishes that batch), content of a batch that gave up is new;
4. closes batches when they hold their target of audio (estimated from headers and sizes, never by
   decoding), or reach the file or byte cap, when their oldest file has waited long enough, or at once
   when nothing else is settling in the landing folder (a lone upload does not wait for company); see
   batching.py, which the bucket sensor shares.

Whatever goes wrong with one file (a symlink, not a regular file, a name that is not UTF-8, no
permission to read it, gone before it was read) is a skip with a reason, never an error of the tick
or of the run: the file stays untouched and the rest goes on.

The cursor holds only bounded state: files waiting to settle, files waiting for a batch to fill, and
where the scan resumes.
"""

import errno
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

from diary_platform.domain.ingest.audio_estimate import estimate_audio_seconds, read_head
from diary_platform.domain.ingest.batches import BatchItem, BatchManifest, BatchStore, new_batch_key
from diary_platform.domain.ingest.batching import Arrivals, BatchLimits, Waiting, close_batches, take_chunk
from diary_platform.domain.ingest.claims import Claims, LandingFileKey, Owner
from diary_platform.domain.ingest.recovery import BatchState
from diary_platform.domain.store.hashing import NotARegularFile, sha256_upload

DEFAULT_USER = "default"
SKIP_EXAMPLES = 5


class Skipped(Exception):
    """An upload that is not taken, and why: a reason code and a message for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def printable(path: str) -> str:
    """A path as a person can read it and a log or a JSON file can hold it, whatever bytes its name has."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_name(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise Skipped("name_not_utf8", f"{printable(path)}: the name is not valid UTF-8; rename the file to have it taken") from None


def read_upload(path: Path) -> tuple[str, os.stat_result]:
    """The content hash and stat of one upload, or Skipped with the reason it cannot be taken."""
    check_name(str(path))
    try:
        return sha256_upload(path)
    except NotARegularFile:
        raise Skipped("not_a_file", f"{printable(str(path))} is not a regular file (a FIFO, device or folder)") from None
    except FileNotFoundError:
        raise Skipped("vanished", f"{printable(str(path))} was gone before it could be read") from None
    except PermissionError as error:
        raise Skipped("unreadable", f"{printable(str(path))} cannot be read: {error.strerror}") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Skipped("symlink", f"{printable(str(path))} is a symbolic link; links are never followed") from None
        raise Skipped("unreadable", f"{printable(str(path))} cannot be read: {error.strerror}") from None


@dataclass
class LandingCursor:
    pending: dict[str, list[int]] = field(default_factory=dict)
    waiting: list[Waiting] = field(default_factory=list)
    resume_after: str = ""

    def to_json(self) -> str:
        raw = {**asdict(self), "waiting": [w.to_dict() for w in self.waiting]}
        return json.dumps(raw, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "LandingCursor":
        if not text:
            return cls()
        raw = json.loads(text)
        waiting = [Waiting.from_dict(w) for w in raw["waiting"]]
        return cls(pending=raw["pending"], waiting=waiting, resume_after=raw["resume_after"])


@dataclass(frozen=True)
class StableFile:
    """A landing file whose size and mtime have not changed since the last tick: finished uploading."""

    relative_path: str
    absolute_path: str
    key: LandingFileKey


@dataclass
class Skips:
    """Files not taken, by reason: how many, and a few of their paths for the tick's log."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, skipped: Skipped, path: str) -> None:
        self.counts[skipped.reason] += 1
        if len(self.examples[skipped.reason]) < SKIP_EXAMPLES:
            self.examples[skipped.reason].append(printable(path))

    def summary(self) -> str:
        return ", ".join(f"{count} {reason} ({', '.join(self.examples[reason])})" for reason, count in sorted(self.counts.items()))


@dataclass(frozen=True)
class Scan:
    """What one bounded pass over the landing folder saw."""

    pending: dict[str, list[int]]
    stable: list[StableFile]
    scanned: int
    resume_after: str


@dataclass(frozen=True)
class TickResult:
    batches: list[BatchManifest]
    cursor: LandingCursor
    files_scanned: int
    duplicates: int
    skips: Skips


def is_candidate_name(name: str) -> bool:
    """Hidden and temporary names are how uploaders mark files still being written."""
    return not name.startswith(".") and not name.endswith((".part", ".tmp", ".crdownload"))


def _walk_sorted(root: Path, relative: tuple[str, ...] = ()) -> Iterator[tuple[str, os.DirEntry]]:
    """Every entry under `root` but folders (which are entered), in the string order of their relative paths.

    Symlinks are yielded, never followed; so are FIFOs and devices, for the scan to refuse and count.
    A folder sorts as its name plus "/", so `a-b` comes before `a/x` exactly as the strings compare;
    the scan's resume point relies on that.
    """
    try:
        entries = sorted(
            os.scandir(root.joinpath(*relative)),
            key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name,
        )
    except OSError:
        return
    for entry in entries:
        if not is_candidate_name(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_sorted(root, (*relative, entry.name))
        else:
            yield "/".join((*relative, entry.name)), entry


def user_of(relative_path: str) -> str:
    parts = relative_path.split("/")
    return parts[0] if len(parts) > 1 else DEFAULT_USER


def _file_key(item: BatchItem) -> LandingFileKey:
    return LandingFileKey(item.user, item.relative_path, item.size, item.mtime_ns)


class Intake:
    """Claiming content into new batches, whoever hands it over (the sensor, the CLI, a re-drive).

    `state_of` says what became of the batch that claimed some content before (recovery.py): content of
    a batch that gave up is claimed again; any other claim stands.
    """

    def __init__(self, batches: BatchStore, claims: Claims, owner: Owner, state_of: Callable[[str], BatchState]):
        self.batches = batches
        self.claims = claims
        self.owner = owner
        self.state_of = state_of

    def holder(self, content_sha256: str) -> tuple[str, BatchState] | None:
        """The batch that holds this content and its state; None when no batch does, or it gave up."""
        return self.holders([content_sha256]).get(content_sha256)

    def holders(self, hashes: list[str]) -> dict[str, tuple[str, BatchState]]:
        """`holder` of many contents with one lookup of their claims."""
        states: dict[str, BatchState] = {}
        held = {}
        for sha, claim in self.claims.content_claims(hashes).items():
            if claim.batch_key not in states:
                states[claim.batch_key] = self.state_of(claim.batch_key)
            if states[claim.batch_key] is not BatchState.GAVE_UP:
                held[sha] = (claim.batch_key, states[claim.batch_key])
        return held

    def commit(self, items: list[BatchItem], now: datetime, file_keys: dict[str, LandingFileKey] | None = None) -> BatchManifest | None:
        """Write the manifest and its lease first (the write-ahead log), then claim; items whose claim is lost drop out."""
        manifest = BatchManifest(new_batch_key(now), now.isoformat(), tuple(items), self.owner)
        self.batches.write(manifest)
        self.batches.write_lease(manifest.key, self.owner, now)
        won = self.claims.claim_contents([(i.content_sha256, i.source_path) for i in items], manifest.key, self.owner)
        kept = [i for i in items if i.content_sha256 in won or self._reclaim(i, manifest.key)]
        if file_keys:
            self._mark_taken(items, {i.content_sha256 for i in kept}, manifest.key, file_keys)
        if len(kept) != len(items):
            if not kept:
                self.batches.delete(manifest.key)
                return None
            manifest = BatchManifest(manifest.key, manifest.created_at, tuple(kept), self.owner)
            self.batches.write(manifest)
        return manifest

    def redrive(self, items: list[BatchItem], now: datetime) -> BatchManifest:
        """A batch of content processed before (quarantined), whatever its claims say; content whose batch
        gave up moves to this one, so that dropping it again later is a duplicate."""
        manifest = BatchManifest(new_batch_key(now), now.isoformat(), tuple(items), self.owner)
        self.batches.write(manifest)
        self.batches.write_lease(manifest.key, self.owner, now)
        for item in items:
            previous = self.claims.content_claim(item.content_sha256)
            if previous is None:
                self.claims.claim_content(item.content_sha256, manifest.key, item.source_path, self.owner)
            elif self.state_of(previous.batch_key) is BatchState.GAVE_UP:
                self.claims.reclaim_content(item.content_sha256, previous.batch_key, manifest.key, item.source_path, self.owner)
        return manifest

    def _reclaim(self, item: BatchItem, batch_key: str) -> bool:
        """Content someone else claimed first is this batch's only when that batch gave up."""
        previous = self.claims.content_claim(item.content_sha256)
        if previous is None or self.state_of(previous.batch_key) is not BatchState.GAVE_UP:
            return False
        return self.claims.reclaim_content(item.content_sha256, previous.batch_key, batch_key, item.source_path, self.owner)

    def _mark_taken(self, items: list[BatchItem], kept: set[str], batch_key: str, file_keys: dict[str, LandingFileKey]) -> None:
        """Each upload is taken, naming the batch that holds its content: this one, or whoever claimed it first."""
        others = self.claims.content_claims(i.content_sha256 for i in items if i.content_sha256 not in kept)
        self.claims.mark_files_taken([
            (file_keys[i.source_path], i.content_sha256,
             batch_key if i.content_sha256 in kept else others[i.content_sha256].batch_key if i.content_sha256 in others else None)
            for i in items if i.source_path in file_keys
        ])


class LandingScanner:
    def __init__(self, landing_root: Path, intake: Intake, limits: BatchLimits):
        self.landing_root = Path(landing_root)
        self.intake = intake
        self.claims = intake.claims
        self.limits = limits

    def tick(self, cursor: LandingCursor, now: datetime) -> TickResult:
        skips = Skips()
        scan = self._scan(cursor, skips)
        waiting, duplicates = self._hash_new(scan, cursor.waiting, now, skips)
        closed, waiting = close_batches(self.intake, self.limits, waiting, now, idle=not scan.pending, file_key=_file_key)
        new_cursor = LandingCursor(pending=scan.pending, waiting=waiting, resume_after=scan.resume_after)
        return TickResult(closed, new_cursor, scan.scanned, duplicates, skips)

    def _scan(self, cursor: LandingCursor, skips: Skips) -> Scan:
        start = cursor.resume_after
        waiting_paths = {w.item.relative_path for w in cursor.waiting}
        observed_files: list[tuple[LandingFileKey, str]] = []
        scanned = 0
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
            try:
                observed = self._observe(relative_path, entry)
            except Skipped as skipped:
                skips.add(skipped, relative_path)
                continue
            if relative_path in waiting_paths:
                continue
            observed_files.append((LandingFileKey(user_of(relative_path), relative_path, *observed), entry.path))
        taken = self.claims.taken_files(key for key, _ in observed_files)
        seen: dict[str, list[int]] = {}
        stable: list[StableFile] = []
        for key, absolute_path in observed_files:
            if key in taken:
                continue
            if cursor.pending.get(key.relative_path) == [key.size, key.mtime_ns]:
                stable.append(StableFile(key.relative_path, absolute_path, key))
            else:
                seen[key.relative_path] = [key.size, key.mtime_ns]
        end = last if not exhausted else None
        untouched = {
            path: observed
            for path, observed in cursor.pending.items()
            if not (path > start and (end is None or path <= end))
        }
        return Scan({**untouched, **seen}, stable, scanned, last if not exhausted else "")

    @staticmethod
    def _observe(relative_path: str, entry: os.DirEntry) -> list[int]:
        """Size and mtime of a landing entry that may become a recording; Skipped for anything else."""
        if entry.is_symlink():
            raise Skipped("symlink", f"{printable(relative_path)} is a symbolic link; links are never followed")
        check_name(relative_path)
        try:
            if not entry.is_file(follow_symlinks=False):
                raise Skipped("not_a_file", f"{printable(relative_path)} is not a regular file (a FIFO, device or socket)")
            status = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            raise Skipped("vanished", f"{printable(relative_path)} was gone before it could be looked at") from None
        return [status.st_size, status.st_mtime_ns]

    def _hash_new(self, scan: Scan, waiting: list[Waiting], now: datetime, skips: Skips) -> tuple[list[Waiting], int]:
        """Hash the stable files (within the byte budget; the rest wait for the next tick) and queue new content."""
        arrivals = Arrivals(self.intake, waiting)
        offers: list[tuple[BatchItem, LandingFileKey]] = []
        hashed_bytes = 0
        for stable in scan.stable:
            key = stable.key
            if hashed_bytes and hashed_bytes + key.size > self.limits.max_bytes_hashed:
                scan.pending[stable.relative_path] = [key.size, key.mtime_ns]
                continue
            hashed_bytes += key.size
            try:
                item = local_item(Path(stable.absolute_path), key.user, stable.relative_path)
            except Skipped as skipped:
                skips.add(skipped, stable.relative_path)
                continue
            offers.append((replace(item, size=key.size, mtime_ns=key.mtime_ns), key))
        arrivals.offer_all(offers, now)
        return arrivals.waiting, arrivals.duplicates


def local_item(path: Path, user: str, relative_path: str) -> BatchItem:
    """A local upload as a batch item: its content hash, size, time and estimated audio; Skipped when it
    cannot be taken."""
    content_sha256, status = read_upload(path)
    audio = estimate_audio_seconds(relative_path, status.st_size, read_head(path))
    return BatchItem(user, str(path.absolute()), relative_path, status.st_size, status.st_mtime_ns, content_sha256, audio)


@dataclass(frozen=True)
class HandedFile:
    """A file handed to the CLI, and what became of it before any batch ran."""

    path: Path
    content_sha256: str | None = None
    batch_key: str | None = None
    state: BatchState | None = None
    skipped: Skipped | None = None


def batch_files(files: list[Path], user: str, now: datetime, intake: Intake, limits: BatchLimits) -> tuple[list[BatchManifest], list[HandedFile]]:
    """New batches for files handed over directly (the CLI), and every other file with the batch that holds
    its content and that batch's state (done, running here or elsewhere, to be resumed), or the reason it
    was skipped."""
    fresh: dict[str, BatchItem] = {}
    others: list[HandedFile] = []
    for path in files:
        try:
            item = local_item(path, user, path.name)
        except Skipped as skipped:
            others.append(HandedFile(path, skipped=skipped))
            continue
        if item.content_sha256 in fresh or intake.holder(item.content_sha256) is not None:
            others.append(HandedFile(path, item.content_sha256))
            continue
        fresh[item.content_sha256] = item
    manifests = []
    queue = list(fresh.values())
    while queue:
        chunk = list(take_chunk(queue, limits, item_of=lambda item: item))
        queue = queue[len(chunk) :]
        manifest = intake.commit(chunk, now)
        if manifest is not None:
            manifests.append(manifest)
    taken = {item.content_sha256 for manifest in manifests for item in manifest.items}
    lost = [HandedFile(Path(item.source_path), sha) for sha, item in fresh.items() if sha not in taken]
    return manifests, [handed if handed.skipped else _held(handed, intake) for handed in others + lost]


def _held(handed: HandedFile, intake: Intake) -> HandedFile:
    """The file with the batch that holds its content now (one of this call's, or another process's)."""
    batch_key, state = intake.holder(handed.content_sha256) or (None, None)
    return HandedFile(handed.path, handed.content_sha256, batch_key, state)
