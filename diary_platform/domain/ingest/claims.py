"""Who took what: one claim per landing file and per content hash, each naming its batch and owner.

On one machine the claims are marker files in the data folder; on a cluster they are rows in the
instance's Postgres (`PostgresClaims`), with the same guarantees from a conditional insert.

A claim says only who took a recording and when; whether it was done is what Dagster recorded (see
recovery.py). Markers are whole from the moment they exist: each is written to a temp file and
hard-linked into place, which fails when the marker is already there, so two ingest paths (the sensor
and `diary run`, two `diary run`s) racing for the same content cannot both win, and a reader never sees
half a marker. A lookup is one read, so the claims scale with the data folder, not with a sensor cursor.
"""

import fcntl
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from diary_platform.domain.state_database import StateDatabase


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot), which tells it from a later process with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Owner:
    """The process that made a claim or a batch: what it is (cli, sensor, redrive) and how to tell it is alive."""

    role: str
    host: str
    boot_id: str
    pid: int
    started: int

    @classmethod
    def this_process(cls, role: str) -> "Owner":
        return cls(role, socket.gethostname(), _boot_id(), os.getpid(), _start_ticks(os.getpid()) or 0)

    def alive(self) -> bool | None:
        """True or False on the machine that made it; None elsewhere (it cannot be told from here)."""
        if (self.host, self.boot_id) != (socket.gethostname(), _boot_id()):
            return None
        return _start_ticks(self.pid) == self.started

    def label(self) -> str:
        return f"{self.role} pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class LandingFileKey:
    """A landing file as the sensor saw it: the same path rewritten with new bytes is a new file."""

    user: str
    relative_path: str
    size: int
    mtime_ns: int

    @property
    def digest(self) -> str:
        raw = f"{self.user}\0{self.relative_path}\0{self.size}\0{self.mtime_ns}".encode()
        return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Claim:
    """Content taken into a batch: which batch, from which upload, by whom, when."""

    content_sha256: str
    batch_key: str
    source: str
    owner: Owner | None
    claimed_at: str

    @classmethod
    def from_json(cls, content_sha256: str, raw: dict) -> "Claim":
        owner = Owner(**raw["owner"]) if raw.get("owner") else None
        return cls(content_sha256, raw["batch"], raw.get("source", ""), owner, raw.get("claimed_at", ""))


def create_exclusive(marker: Path, payload: dict) -> bool:
    """Create `marker` holding `payload`, whole, unless it exists: write a temp file, then hard-link it in."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=marker.parent, prefix=f".{marker.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, marker)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temp)


def _read(marker: Path) -> dict | None:
    try:
        return json.loads(marker.read_text())
    except FileNotFoundError:
        return None


class Claims(Protocol):
    """The ledger of claims: files in the data folder (FileClaims) or rows in Postgres (PostgresClaims)."""

    def claim_content(self, content_sha256: str, batch_key: str, source: str, owner: Owner | None = None) -> bool:
        """True when this content was not claimed before and now belongs to `batch_key`."""

    def content_claim(self, content_sha256: str) -> Claim | None: ...

    def claim_contents(self, contents: list[tuple[str, str]], batch_key: str, owner: Owner | None = None) -> set[str]:
        """Claim each (content hash, source) for `batch_key`; the hashes this call won. A batch's worth at once."""
        return {sha for sha, source in contents if self.claim_content(sha, batch_key, source, owner)}

    def content_claims(self, hashes: Iterable[str]) -> dict[str, Claim]:
        """The claims of those of `hashes` that have one."""
        return {sha: claim for sha in hashes if (claim := self.content_claim(sha)) is not None}

    def reclaim_content(self, content_sha256: str, from_batch: str, batch_key: str, source: str, owner: Owner) -> bool:
        """Move content from a batch that gave up to `batch_key`; False when someone else moved it first."""

    def taken_files(self, keys: Iterable[LandingFileKey]) -> set[LandingFileKey]:
        """Those of `keys` already taken: one lookup for a whole scan, not one per file."""
        ...

    def mark_file_taken(self, key: LandingFileKey, content_sha256: str, batch_key: str | None) -> None: ...

    def mark_files_taken(self, taken: list[tuple[LandingFileKey, str, str | None]]) -> None:
        """`mark_file_taken` for each (file, content hash, batch holding it)."""
        for key, content_sha256, batch_key in taken:
            self.mark_file_taken(key, content_sha256, batch_key)

    def content_batch(self, content_sha256: str) -> str | None:
        claim = self.content_claim(content_sha256)
        return claim.batch_key if claim else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class FileClaims(Claims):
    """One marker file per content and per landing file, created exclusively (for a single machine)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _marker(self, kind: str, digest: str) -> Path:
        return self.root / kind / digest[:2] / f"{digest}.json"

    def claim_content(self, content_sha256: str, batch_key: str, source: str, owner: Owner | None = None) -> bool:
        payload = {"batch": batch_key, "source": source, "owner": asdict(owner) if owner else None, "claimed_at": _now()}
        return create_exclusive(self._marker("content", content_sha256), payload)

    def content_claim(self, content_sha256: str) -> Claim | None:
        raw = _read(self._marker("content", content_sha256))
        return Claim.from_json(content_sha256, raw) if raw else None

    @contextmanager
    def _exclusive(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".reclaim.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def reclaim_content(self, content_sha256: str, from_batch: str, batch_key: str, source: str, owner: Owner) -> bool:
        marker = self._marker("content", content_sha256)
        with self._exclusive():
            current = self.content_claim(content_sha256)
            if current is None or current.batch_key != from_batch:
                return False
            marker.unlink()
            return self.claim_content(content_sha256, batch_key, source, owner)

    def taken_files(self, keys: Iterable[LandingFileKey]) -> set[LandingFileKey]:
        return {key for key in keys if self._marker("files", key.digest).exists()}

    def mark_file_taken(self, key: LandingFileKey, content_sha256: str, batch_key: str | None) -> None:
        create_exclusive(
            self._marker("files", key.digest),
            {"path": key.relative_path, "user": key.user, "sha256": content_sha256, "batch": batch_key},
        )


class PostgresClaims(Claims):
    """Claims as rows keyed by content (and by landing file): a conditional insert wins a claim, a conditional
    update moves one, so any number of machines race safely."""

    def __init__(self, database: StateDatabase):
        self.database = database

    def claim_content(self, content_sha256: str, batch_key: str, source: str, owner: Owner | None = None) -> bool:
        return self.database.execute(
            "INSERT INTO diary_content_claims (content_sha256, batch_key, source, owner, claimed_at)"
            " VALUES (:sha, :batch, :source, CAST(:owner AS jsonb), :claimed_at) ON CONFLICT (content_sha256) DO NOTHING",
            sha=content_sha256, batch=batch_key, source=source, owner=_owner_json(owner), claimed_at=_now(),
        ) == 1

    def content_claim(self, content_sha256: str) -> Claim | None:
        return self.content_claims([content_sha256]).get(content_sha256)

    def claim_contents(self, contents: list[tuple[str, str]], batch_key: str, owner: Owner | None = None) -> set[str]:
        if not contents:
            return set()
        rows = self.database.rows(
            "INSERT INTO diary_content_claims (content_sha256, batch_key, source, owner, claimed_at)"
            " SELECT sha, :batch, source, CAST(:owner AS jsonb), :claimed_at"
            " FROM unnest(CAST(:hashes AS text[]), CAST(:sources AS text[])) AS offered(sha, source)"
            " ON CONFLICT (content_sha256) DO NOTHING RETURNING content_sha256",
            hashes=[sha for sha, _ in contents], sources=[source for _, source in contents],
            batch=batch_key, owner=_owner_json(owner), claimed_at=_now(),
        )
        return {row[0] for row in rows}

    def content_claims(self, hashes: Iterable[str]) -> dict[str, Claim]:
        wanted = list(set(hashes))
        if not wanted:
            return {}
        rows = self.database.rows(
            "SELECT content_sha256, batch_key, source, owner, claimed_at FROM diary_content_claims WHERE content_sha256 = ANY(:hashes)",
            hashes=wanted,
        )
        return {
            sha: Claim.from_json(sha, {"batch": batch_key, "source": source, "owner": owner, "claimed_at": claimed_at.isoformat()})
            for sha, batch_key, source, owner, claimed_at in rows
        }

    def reclaim_content(self, content_sha256: str, from_batch: str, batch_key: str, source: str, owner: Owner) -> bool:
        return self.database.execute(
            "UPDATE diary_content_claims SET batch_key = :batch, source = :source, owner = CAST(:owner AS jsonb), claimed_at = :claimed_at"
            " WHERE content_sha256 = :sha AND batch_key = :from_batch",
            sha=content_sha256, from_batch=from_batch, batch=batch_key, source=source, owner=_owner_json(owner), claimed_at=_now(),
        ) == 1

    def taken_files(self, keys: Iterable[LandingFileKey]) -> set[LandingFileKey]:
        by_digest = {key.digest: key for key in keys}
        if not by_digest:
            return set()
        rows = self.database.rows(
            "SELECT file_digest FROM diary_taken_files WHERE file_digest = ANY(:digests)", digests=list(by_digest)
        )
        return {by_digest[row[0]] for row in rows}

    def mark_file_taken(self, key: LandingFileKey, content_sha256: str, batch_key: str | None) -> None:
        self.mark_files_taken([(key, content_sha256, batch_key)])

    def mark_files_taken(self, taken: list[tuple[LandingFileKey, str, str | None]]) -> None:
        if not taken:
            return
        self.database.execute(
            "INSERT INTO diary_taken_files (file_digest, user_name, relative_path, content_sha256, batch_key)"
            " SELECT * FROM unnest(CAST(:digests AS text[]), CAST(:users AS text[]), CAST(:paths AS text[]),"
            " CAST(:hashes AS text[]), CAST(:batches AS text[])) ON CONFLICT (file_digest) DO NOTHING",
            digests=[key.digest for key, _, _ in taken], users=[key.user for key, _, _ in taken],
            paths=[key.relative_path for key, _, _ in taken], hashes=[sha for _, sha, _ in taken], batches=[batch for _, _, batch in taken],
        )


def _owner_json(owner: Owner | None) -> str | None:
    return json.dumps(asdict(owner)) if owner else None
