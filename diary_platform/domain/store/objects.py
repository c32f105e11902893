"""Object storage with tiers: a local folder (hot/warm/cold subfolders) or a Google Cloud Storage prefix.

Keys are relative POSIX paths (`tables/transcripts/<batch>.parquet`). Every write is atomic and
non-destructive: locally a temp file, fsync and rename; on GCS one single-object upload that carries
its MD5 and a generation precondition (see `GcsStore`). An unchanged
value is never written again, so re-materializing with the same inputs adds no objects and, on a
versioned bucket, no generations.

Tiers: locally the tiering job moves files between the three subfolders and reads look in hot, then
warm, then cold. On GCS an object's tier is its storage class, which the bucket's lifecycle rules
change; nothing here moves objects there.
"""

import base64
import errno
import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from diary_platform.domain.store.hashing import file_digest

TIERS = ("hot", "warm", "cold")
WRITE_TIER = "hot"
STORAGE_CLASS_TIERS = {
    "STANDARD": "hot",
    "MULTI_REGIONAL": "hot",
    "REGIONAL": "hot",
    "NEARLINE": "warm",
    "COLDLINE": "cold",
    "ARCHIVE": "cold",
}
_CHUNK = 1 << 20
_UPLOAD_CHUNK = 8 << 20


@dataclass(frozen=True)
class StoredObject:
    key: str
    uri: str
    tier: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class Written:
    """What a write did: `new` is False when an identical object was already there."""

    key: str
    uri: str
    tier: str
    size: int
    new: bool


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NoSpaceLeft(OSError):
    """The disk (or quota) holding the data is full: a fault of the platform, never of a recording."""

    def __init__(self, folder: Path):
        super().__init__(errno.ENOSPC, f"no space left on {folder}")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


@contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """Write to a temp file beside `target`, fsync, then rename: readers see the old or the new file, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except OSError as error:
        tmp_path.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceLeft(target.parent) from error
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _md5_file(path: Path) -> bytes:
    return file_digest(path, "md5").digest()


class ObjectStore(ABC):
    """The operations every backend offers; `DataStore` builds the platform's layout on top."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where a new write of `key` goes."""

    @abstractmethod
    def key(self, uri: str) -> str:
        """The key of a URI this store handed out, whichever tier the object has moved to since."""

    @abstractmethod
    def find(self, key: str) -> StoredObject | None: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, *, content_addressed: bool = False) -> Written:
        """Store `data` under `key`; a content-addressed key that exists anywhere is never rewritten."""

    @abstractmethod
    def write_file(self, key: str, source: Path, *, content_addressed: bool = False) -> Written: ...

    @abstractmethod
    def writer(self, key: str, *, content_addressed: bool = False) -> AbstractContextManager[BinaryIO]:
        """A stream into `key`, stored only if the block ends without an error; for uploads too big to buffer."""

    @abstractmethod
    def local_file(self, key: str) -> AbstractContextManager[Path]:
        """A local path with the object's bytes, for code that needs a file (decoders, model input)."""

    @abstractmethod
    def scan(self, prefix: str = "") -> Iterator[StoredObject]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @property
    @abstractmethod
    def moves_tiers(self) -> bool:
        """True when the platform moves objects between tiers itself (local); False when the bucket does."""

    @abstractmethod
    def move(self, key: str, tier: str) -> StoredObject: ...

    def exists(self, key: str) -> bool:
        return self.find(key) is not None

    def remove_stale_temporaries(self, older_than: datetime) -> int:
        """Leftovers of killed writers. On GCS there are none: an unfinished upload is no object."""
        return 0

    @contextmanager
    def output_file(self, key: str, *, content_addressed: bool = False) -> Iterator[Path]:
        """A local path to write `key` into; stored when the block ends without an error."""
        with tempfile.TemporaryDirectory(prefix="diary-out-") as folder:
            path = Path(folder) / Path(key).name
            yield path
            if path.is_file():
                self.write_file(key, path, content_addressed=content_addressed)


class LocalTieredStore(ObjectStore):
    """`<root>/<tier>/<key>`; new writes go to hot."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()

    moves_tiers = True

    def path(self, key: str, tier: str = WRITE_TIER) -> Path:
        return self.root / tier / key

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def key(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ValueError(f"{uri} is not in the local data folder {self.root}")
        relative = Path(unquote(parsed.path)).relative_to(self.root)
        if relative.parts[0] not in TIERS:
            raise ValueError(f"{uri} is not in a tier of {self.root}")
        return Path(*relative.parts[1:]).as_posix()

    def _stored(self, key: str, tier: str, path: Path) -> StoredObject:
        stat = path.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc)
        return StoredObject(key, path.as_uri(), tier, stat.st_size, modified)

    def find(self, key: str) -> StoredObject | None:
        for tier in TIERS:
            path = self.path(key, tier)
            if path.is_file():
                return self._stored(key, tier, path)
        return None

    def _located(self, key: str) -> Path:
        found = self.find(key)
        if found is None:
            raise FileNotFoundError(f"{key} is in no tier of {self.root}")
        return self.path(key, found.tier)

    def read_bytes(self, key: str) -> bytes:
        return self._located(key).read_bytes()

    def _unchanged(self, key: str, size: int, md5: Callable[[], bytes]) -> StoredObject | None:
        found = self.find(key)
        if found is not None and found.size == size and _md5_file(self.path(key, found.tier)) == md5():
            return found
        return None

    def _finish(self, key: str, size: int) -> Written:
        """After the hot copy is safely renamed into place, drop older copies in colder tiers."""
        for tier in TIERS:
            if tier != WRITE_TIER:
                self.path(key, tier).unlink(missing_ok=True)
        return Written(key, self.uri(key), WRITE_TIER, size, True)

    def write_bytes(self, key: str, data: bytes, *, content_addressed: bool = False) -> Written:
        found = self.find(key) if content_addressed else self._unchanged(key, len(data), lambda: hashlib.md5(data).digest())
        if found is not None:
            return Written(key, found.uri, found.tier, found.size, False)
        with atomic_writer(self.path(key)) as handle:
            handle.write(data)
        return self._finish(key, len(data))

    def write_file(self, key: str, source: Path, *, content_addressed: bool = False) -> Written:
        size = source.stat().st_size
        found = self.find(key) if content_addressed else self._unchanged(key, size, lambda: _md5_file(source))
        if found is not None:
            return Written(key, found.uri, found.tier, found.size, False)
        with open(source, "rb") as src, atomic_writer(self.path(key)) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        return self._finish(key, size)

    @contextmanager
    def writer(self, key: str, *, content_addressed: bool = False) -> Iterator[BinaryIO]:
        with atomic_writer(self.path(key)) as handle:
            yield handle
            size = handle.tell()
        self._finish(key, size)

    @contextmanager
    def output_file(self, key: str, *, content_addressed: bool = False) -> Iterator[Path]:
        """Locally the writer renames into the hot tier itself (see `atomic_writer`), so no copy is made."""
        target = self.path(key)
        yield target
        if target.is_file():
            self._finish(key, target.stat().st_size)

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        yield self._located(key)

    def scan(self, prefix: str = "") -> Iterator[StoredObject]:
        for tier in TIERS:
            base = self.root / tier
            start = base / prefix
            if not start.exists():
                continue
            for dirpath, _, filenames in os.walk(start):
                for name in sorted(filenames):
                    if is_temporary(name):
                        continue
                    path = Path(dirpath) / name
                    yield self._stored(path.relative_to(base).as_posix(), tier, path)

    def delete(self, key: str) -> None:
        for tier in TIERS:
            self.path(key, tier).unlink(missing_ok=True)

    def move(self, key: str, tier: str) -> StoredObject:
        """Copy into `tier` (atomically), then remove the old copy: at every moment one full copy exists."""
        found = self.find(key)
        if found is None:
            raise FileNotFoundError(key)
        if found.tier == tier:
            return found
        source = self.path(key, found.tier)
        target = self.path(key, tier)
        with open(source, "rb") as src, atomic_writer(target) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        os.utime(target, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
        if target.stat().st_size != found.size:
            raise OSError(f"copy of {key} into {tier} has the wrong size; the {found.tier} copy is kept")
        source.unlink()
        return self._stored(key, tier, target)

    def remove_stale_temporaries(self, older_than: datetime) -> int:
        """Temp files a killed writer left behind (the target itself is always whole)."""
        removed = 0
        for tier in TIERS:
            for path in (self.root / tier).rglob(".*.tmp"):
                if datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc) < older_than:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


class GcsStore(ObjectStore):
    """`gs://<bucket>/<prefix>/<key>`; tiers are storage classes set by lifecycle rules.

    Everything goes through one google-cloud-storage client. A whole-object write is one upload that
    carries its MD5 (the server refuses bytes that do not match it) and a generation precondition: 0 for
    a content-addressed key (create only), else the generation read just before, so a concurrent writer
    makes the upload fail rather than be overwritten unseen. A streamed write is one resumable upload
    with the same precondition, which becomes an object only when it is finished.
    """

    moves_tiers = False

    def __init__(self, root_uri: str, client):
        parsed = urlparse(root_uri)
        if parsed.scheme != "gs" or not parsed.netloc:
            raise ValueError(f"expected gs://bucket[/prefix], got {root_uri}")
        self.client = client
        self.bucket = client.bucket(parsed.netloc)
        self.prefix = parsed.path.strip("/")

    def _name(self, key: str) -> str:
        return "/".join(part for part in (self.prefix, key) if part)

    def _blob(self, key: str):
        return self.bucket.blob(self._name(key))

    def _current(self, key: str):
        """The object's metadata (generation, MD5, storage class), or None."""
        return self.bucket.get_blob(self._name(key))

    def _stored(self, blob) -> StoredObject:
        key = blob.name[len(self.prefix) :].lstrip("/") if self.prefix else blob.name
        tier = STORAGE_CLASS_TIERS.get(blob.storage_class or "STANDARD", "hot")
        return StoredObject(key, f"gs://{self.bucket.name}/{blob.name}", tier, int(blob.size), blob.updated)

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket.name}/{self._name(key)}"

    def key(self, uri: str) -> str:
        base = f"gs://{self.bucket.name}/{self.prefix}".rstrip("/") + "/"
        if not uri.startswith(base):
            raise ValueError(f"{uri} is not under {base}")
        return uri[len(base) :]

    def find(self, key: str) -> StoredObject | None:
        blob = self.bucket.get_blob(self._name(key))
        return self._stored(blob) if blob is not None else None

    def read_bytes(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self._blob(key).download_as_bytes()
        except NotFound as error:
            raise FileNotFoundError(f"{self.uri(key)} does not exist") from error

    def _write(self, key: str, md5: Callable[[], bytes], size: int, content_addressed: bool, upload: Callable) -> Written:
        from google.api_core.exceptions import PreconditionFailed

        current = self._current(key)
        if current is not None and (content_addressed or (current.md5_hash and base64.b64decode(current.md5_hash) == md5())):
            found = self._stored(current)
            return Written(key, found.uri, found.tier, found.size, False)
        generation = 0 if content_addressed or current is None else int(current.generation)
        try:
            upload(self._blob(key), checksum="md5", if_generation_match=generation)
        except PreconditionFailed:
            if not content_addressed:
                raise
            found = self.find(key)  # the same content, stored by another writer meanwhile
            return Written(key, found.uri, found.tier, found.size, False)
        return Written(key, self.uri(key), WRITE_TIER, size, True)

    def write_bytes(self, key: str, data: bytes, *, content_addressed: bool = False) -> Written:
        return self._write(
            key, lambda: hashlib.md5(data).digest(), len(data), content_addressed,
            lambda blob, **options: blob.upload_from_string(data, **options),
        )

    def write_file(self, key: str, source: Path, *, content_addressed: bool = False) -> Written:
        return self._write(
            key, lambda: _md5_file(source), source.stat().st_size, content_addressed,
            lambda blob, **options: blob.upload_from_filename(str(source), **options),
        )

    @contextmanager
    def writer(self, key: str, *, content_addressed: bool = False) -> Iterator[BinaryIO]:
        """One resumable upload: a writer that dies leaves no object and the previous generation in place;
        an error in the block cancels the upload. A content-addressed key stored meanwhile by another
        writer holds the same bytes, so losing that race is not an error."""
        from google.api_core.exceptions import PreconditionFailed

        current = None if content_addressed else self._current(key)
        generation = 0 if current is None else int(current.generation)
        try:
            with self._blob(key).open(
                "wb", chunk_size=_UPLOAD_CHUNK, ignore_flush=True, checksum="md5", if_generation_match=generation
            ) as handle:
                yield handle
        except PreconditionFailed:
            if not content_addressed:
                raise

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="diary-in-") as folder:
            path = Path(folder) / Path(key).name
            self._blob(key).download_to_filename(str(path))
            yield path

    def scan(self, prefix: str = "") -> Iterator[StoredObject]:
        for blob in self.client.list_blobs(self.bucket, prefix=self._name(prefix)):
            yield self._stored(blob)

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with suppress(NotFound):
            self._blob(key).delete()

    def move(self, key: str, tier: str) -> StoredObject:
        raise NotImplementedError("on GCS the bucket's lifecycle rules change storage classes")

    def lifecycle_rules(self) -> list[dict]:
        return [dict(rule) for rule in self.client.get_bucket(self.bucket.name).lifecycle_rules]


def open_objects(root: str | Path, gcs_client=None) -> ObjectStore:
    """`gs://bucket/prefix` for Cloud Storage (through `gcs_client`), anything else is a local folder."""
    if str(root).startswith("gs://"):
        if gcs_client is None:
            raise ValueError(f"{root} needs a google-cloud-storage client")
        return GcsStore(str(root), gcs_client)
    return LocalTieredStore(root)
