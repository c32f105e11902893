"""Turning uploads in a Cloud Storage bucket into ingest batches, a bounded amount of listing per tick.

Uploads are the objects under `gs://bucket/prefix/<user>/...` (objects directly under the prefix belong
to `default`); hidden and temporary names are passed over, and batches close as the landing folder's
do (batching.py: audio target, caps, wait, idle), through the same `Intake`.

Finding new objects without re-listing the bucket: Cloud Storage lists names in lexicographic order,
from any name on (`start_offset`), a page at a time (`max_results`). A tick lists at most
`max_files_scanned` names from where the last one stopped (the cursor's `resume_after`), so a tick
costs the same for a thousand objects or a million, and one sweep of N objects takes
N / max_files_scanned ticks; after the last name the next sweep starts from the first. The cursor also
keeps a high-water mark, `handled_before`: when the last sweep with nothing left to retry started (less
a margin for clock skew). Listing is strongly consistent, so every object last updated before then was
listed by that sweep and taken, found a duplicate or refused: later sweeps pass over it without looking
up its claim, and only objects updated since cost a lookup.

Each object version is taken once: its upload is keyed by `gs://bucket/name#generation` (the claims'
file marker, as the folder keys files by path, size and mtime), so an object rewritten under the same
name, a new generation, is a new upload. Objects are atomic once finalized: a listed object is whole
and nothing waits for it to settle. Nothing in the bucket is ever written, rewritten or deleted.

Content identity: the object's MD5 (from its metadata) is looked up first; content seen before under
any name maps to its sha256 (an alias marker written the first time), so a duplicate costs no
download. New content is read once, within the tick's byte budget, for its sha256 (the platform's
identity) and the header bytes of the audio estimate, `READ_WORKERS` at a time, within the tick's byte
budget and `TICK_READ_SECONDS`; the next tick resumes at the first object not read. raw_audio reads
that generation again and checks the sha256 as it copies. Composite objects have no MD5, only a CRC32C: 32 bits is no identity (at a
million objects random collisions are expected), so they are always read.

Latency limit: a new object is found when the sweep passes its name, up to N / max_files_scanned ticks
after it was written (a million objects, 5,000 names per tick, a tick every 5 s: about 17 minutes).
At that scale the path is Pub/Sub notifications (OBJECT_FINALIZE) from the bucket to a subscription
the sensor pulls: latency independent of the bucket's size, and the sweep kept only as the reconciler
that catches lost messages. That is not built here.
"""

import base64
import hashlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from diary_platform.domain.ingest.audio_estimate import HEADER_BYTES, estimate_audio_seconds
from diary_platform.domain.ingest.batches import BatchItem, BatchManifest
from diary_platform.domain.ingest.batching import Arrivals, BatchLimits, Waiting, close_batches
from diary_platform.domain.ingest.claims import LandingFileKey, create_exclusive
from diary_platform.domain.ingest.landing import Intake, Skipped, Skips, is_candidate_name, user_of
from diary_platform.domain.store.uploads import object_uri

CLOCK_SKEW = timedelta(minutes=5)
READ_WORKERS = 4  # reads of new objects in flight at once: each is a round trip, latency-bound
TICK_READ_SECONDS = 20.0  # reading stops after this (the tick resumes there next time): ticks stay far below Dagster's 60 s


@dataclass
class BucketCursor:
    waiting: list[Waiting] = field(default_factory=list)
    resume_after: str = ""
    sweep_started: str = ""
    sweep_clean: bool = True
    handled_before: str = ""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "waiting": [w.to_dict() for w in self.waiting]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "BucketCursor":
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(**{**raw, "waiting": [Waiting.from_dict(w) for w in raw["waiting"]]})


@dataclass(frozen=True)
class BucketTick:
    batches: list[BatchManifest]
    cursor: BucketCursor
    objects_listed: int
    bytes_read: int
    duplicates: int
    skips: Skips


class ContentAliases:
    """The sha256 of content seen before, by its MD5: one marker per MD5, written once, never changed.

    Only a saving (a duplicate is not read): losing the folder costs reads, never correctness, since
    content is still claimed by its sha256; so it may live on a sensor's local disk.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def _marker(self, md5_hex: str) -> Path:
        return self.root / md5_hex[:2] / f"{md5_hex}.json"

    def sha256_of(self, md5_hex: str) -> str | None:
        try:
            return json.loads(self._marker(md5_hex).read_text())["sha256"]
        except FileNotFoundError:
            return None

    def remember(self, md5_hex: str, content_sha256: str) -> None:
        create_exclusive(self._marker(md5_hex), {"sha256": content_sha256})


def object_file_key(item: BatchItem) -> LandingFileKey:
    """An object version as the claims know it: its `gs://bucket/name#generation` names it exactly."""
    return LandingFileKey(item.user, item.source_path, item.size, item.mtime_ns)


class _Digest(io.RawIOBase):
    """A write-only stream that keeps the sha256 of what passes through and its first bytes."""

    def __init__(self):
        self.sha256 = hashlib.sha256()
        self.head = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.sha256.update(chunk)
        if len(self.head) < HEADER_BYTES:
            self.head += bytes(chunk[: HEADER_BYTES - len(self.head)])
        return len(chunk)


class BucketScanner:
    def __init__(
        self, client: Any, landing_uri: str, intake: Intake, aliases: ContentAliases, limits: BatchLimits, clock_skew: timedelta = CLOCK_SKEW
    ):
        """`clock_skew`: how far this machine's clock may be ahead of the bucket's, for the high-water mark."""
        bucket_name, _, prefix = landing_uri.removeprefix("gs://").partition("/")
        self.client = client
        self.bucket = client.bucket(bucket_name)
        self.name_prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.intake = intake
        self.claims = intake.claims
        self.aliases = aliases
        self.limits = limits
        self.clock_skew = clock_skew

    def tick(self, cursor: BucketCursor, now: datetime) -> BucketTick:
        continuing = bool(cursor.resume_after)
        sweep_started = cursor.sweep_started if continuing else now.isoformat()
        sweep_clean = cursor.sweep_clean if continuing else True
        handled_before = datetime.fromisoformat(cursor.handled_before) if cursor.handled_before else None
        listed, page_full, arrivals_ahead = self._new_versions(cursor, handled_before)
        reads = self._read_within_budgets(arrivals_ahead, time.monotonic() + TICK_READ_SECONDS)
        cut = reads.done
        arrivals = Arrivals(self.intake, cursor.waiting)
        offers: list[tuple[BatchItem, LandingFileKey]] = []
        skips = Skips()
        for arrival in arrivals_ahead[:cut]:
            content_sha256, head = arrival.content_sha256, b""  # content seen before is estimated from its size
            if content_sha256 is None:
                outcome = reads.outcomes[arrival.content_key]
                if isinstance(outcome, Skipped):
                    skips.add(outcome, arrival.key.relative_path)
                    # only an object that is itself gone needs no second look; a copy of it is looked at again
                    sweep_clean = sweep_clean and outcome.reason == "vanished" and arrival.blob.name in reads.names
                    continue
                content_sha256, head = outcome
                if arrival.md5_hex:
                    self.aliases.remember(arrival.md5_hex, content_sha256)
            key = arrival.key
            audio = estimate_audio_seconds(arrival.relative_path, key.size, head)
            item = BatchItem(key.user, key.relative_path, arrival.relative_path, key.size, key.mtime_ns, content_sha256, audio)
            offers.append((item, key))
        arrivals.offer_all(offers, now)
        swept = cut == len(arrivals_ahead) and not page_full
        if swept and sweep_clean:
            handled_before = datetime.fromisoformat(sweep_started) - self.clock_skew
        first_not_done = arrivals_ahead[cut].blob.name if cut < len(arrivals_ahead) else None
        resume_after = "" if swept else _resume_point(listed, first_not_done, cursor.resume_after)
        closed, waiting = close_batches(self.intake, self.limits, arrivals.waiting, now, idle=swept, file_key=object_file_key)
        new_cursor = BucketCursor(
            waiting=waiting,
            resume_after=resume_after,
            sweep_started=sweep_started,
            sweep_clean=sweep_clean,
            handled_before=handled_before.isoformat() if handled_before else "",
        )
        return BucketTick(closed, new_cursor, len(listed), reads.bytes_read, arrivals.duplicates, skips)

    def _new_versions(self, cursor: BucketCursor, handled_before: datetime | None) -> tuple[list[str], bool, list["_Arrival"]]:
        """One bounded page of names after the resume point, whether the page was full (more may follow),
        and the object versions among them not taken yet, in name order, with the sha256 their MD5 is
        known by (None: to be read)."""
        names: list[str] = []
        returned = 0
        candidates: list[tuple[Any, str, LandingFileKey]] = []
        waiting_sources = {w.item.source_path for w in cursor.waiting}
        listing = self.client.list_blobs(
            self.bucket, prefix=self.name_prefix, start_offset=cursor.resume_after or None, max_results=self.limits.max_files_scanned
        )
        for blob in listing:
            returned += 1
            if blob.name <= cursor.resume_after:  # start_offset includes the name itself
                continue
            names.append(blob.name)
            relative_path = blob.name[len(self.name_prefix) :]
            if not relative_path or not all(is_candidate_name(part) for part in relative_path.split("/")):
                continue
            if handled_before is not None and blob.updated < handled_before:
                continue
            source = object_uri(self.bucket.name, blob.name, blob.generation)
            key = LandingFileKey(user_of(relative_path), source, blob.size, int(blob.updated.timestamp() * 1_000_000) * 1000)
            if source not in waiting_sources:
                candidates.append((blob, relative_path, key))
        taken = self.claims.taken_files(key for _, _, key in candidates)
        arrivals: list[_Arrival] = []
        for blob, relative_path, key in candidates:
            if key in taken:
                continue
            md5_hex = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
            arrivals.append(_Arrival(blob, relative_path, key, md5_hex, self.aliases.sha256_of(md5_hex) if md5_hex else None))
        return names, returned == self.limits.max_files_scanned, arrivals

    def _read_within_budgets(self, arrivals: list["_Arrival"], deadline: float) -> "_Reads":
        """Read new content side by side, in name order, once per MD5, until the byte budget or the tick's
        time for reading is spent (the first read is never refused); the arrivals after the last one done
        wait for the next tick, which resumes at the first of them."""
        reads = _Reads()
        budget_left = self.limits.max_bytes_hashed
        out_of_budget = False
        with ThreadPoolExecutor(READ_WORKERS) as pool:
            while reads.done < len(arrivals) and not out_of_budget and time.monotonic() < deadline:
                chunk: list[_Arrival] = []
                to_read: dict[str, Any] = {}
                for arrival in arrivals[reads.done :]:
                    needs_read = arrival.content_sha256 is None and arrival.content_key not in reads.outcomes | to_read
                    if needs_read and len(to_read) == READ_WORKERS:
                        break
                    if needs_read and (reads.names or to_read) and arrival.key.size > budget_left:
                        out_of_budget = True
                        break
                    if needs_read:
                        budget_left -= arrival.key.size
                        to_read[arrival.content_key] = arrival.blob
                    chunk.append(arrival)
                reads.outcomes.update(zip(to_read, pool.map(self._read, to_read.values())))
                reads.names.update(blob.name for blob in to_read.values())
                reads.bytes_read += sum(blob.size for blob in to_read.values())
                reads.done += len(chunk)
        return reads

    def _read(self, blob) -> tuple[str, bytes] | Skipped:
        """The sha256 and header bytes of exactly the generation listed, or why it cannot be read."""
        from google.api_core.exceptions import GoogleAPIError, NotFound

        digest = _Digest()
        try:
            self.bucket.blob(blob.name, generation=blob.generation).download_to_file(digest)
        except NotFound:
            return Skipped("vanished", f"gs://{self.bucket.name}/{blob.name} was gone before it could be read")
        except (GoogleAPIError, OSError) as error:
            return Skipped("unreadable", f"gs://{self.bucket.name}/{blob.name} cannot be read: {error}")
        return digest.sha256.hexdigest(), bytes(digest.head)


@dataclass(frozen=True)
class _Arrival:
    """A listed object version not taken yet: its claims key (named by `gs://bucket/name#generation`),
    its MD5 and the sha256 known for that MD5, if any."""

    blob: Any
    relative_path: str
    key: LandingFileKey
    md5_hex: str | None
    content_sha256: str | None

    @property
    def content_key(self) -> str:
        """What one read serves: every object with this MD5, or only this object when it has none."""
        return f"md5:{self.md5_hex}" if self.md5_hex else f"object:{self.key.relative_path}"


@dataclass
class _Reads:
    outcomes: dict[str, tuple[str, bytes] | Skipped] = field(default_factory=dict)  # by content key
    names: set[str] = field(default_factory=set)  # the objects actually read
    bytes_read: int = 0
    done: int = 0  # arrivals, in name order, whose content is known or was read


def _resume_point(listed: list[str], first_not_done: str | None, previous: str) -> str:
    """Where the next tick resumes: after the last name listed, or just before the first arrival not done
    (which is where this tick began when it did none)."""
    if first_not_done is None:
        return listed[-1] if listed else previous
    index = listed.index(first_not_done)
    return listed[index - 1] if index else previous
