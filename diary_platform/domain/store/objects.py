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

    Whole-object writes go through the google-cloud-storage client: one upload that carries its MD5
    (the server refuses bytes that do not match it) and a generation precondition: 0 for a
    content-addressed key (create only), else the generation read just before, so a concurrent
    writer makes the upload fail rather than be overwritten unseen. Reads, listings and streamed
    uploads go through gcsfs.
    """

    moves_tiers = False

    def __init__(self, root_uri: str, project: str | None = None, token: object = None, client: object = None):
        import gcsfs.core
        from google.cloud import storage

        parsed = urlparse(root_uri)
        if parsed.scheme != "gs" or not parsed.netloc:
            raise ValueError(f"expected gs://bucket[/prefix], got {root_uri}")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if token is None and os.environ.get("STORAGE_EMULATOR_HOST"):
            token = "anon"
        # The plain filesystem: the "extended" default probes for zonal buckets over gRPC first.
        self.fs = gcsfs.core.GCSFileSystem(project=project, token=token, consistency="md5")
        self.client = client or storage.Client(project=project)

    def _blob(self, key: str):
        return self.client.bucket(self.bucket).blob("/".join(part for part in (self.prefix, key) if part))

    def _upload(self, key: str, generation: int, create_only: bool, data: bytes | None = None, source: Path | None = None) -> bool:
        """One upload with its MD5 and a generation precondition. False when a content-addressed key
        appeared meanwhile (same content by definition); any other lost race is an error."""
        from google.api_core.exceptions import PreconditionFailed

        blob = self._blob(key)
        try:
            if source is None:
                blob.upload_from_string(data, checksum="md5", if_generation_match=generation)
            else:
                blob.upload_from_filename(str(source), checksum="md5", if_generation_match=generation)
        except PreconditionFailed:
            if create_only:
                return False
            raise
        return True

    def _path(self, key: str) -> str:
        return "/".join(part for part in (self.bucket, self.prefix, key) if part)

    def uri(self, key: str) -> str:
        return f"gs://{self._path(key)}"

    def key(self, uri: str) -> str:
        base = f"gs://{self._path('')}".rstrip("/") + "/"
        if not uri.startswith(base):
            raise ValueError(f"{uri} is not under {base}")
        return uri[len(base):]

    def _stored(self, info: dict) -> StoredObject:
        name = info["name"]
        key = name[len(self._path("")) :].lstrip("/")
        modified = info.get("mtime") or info.get("updated")
        if isinstance(modified, str):
            modified = datetime.fromisoformat(modified.replace("Z", "+00:00"))
        tier = STORAGE_CLASS_TIERS.get(info.get("storageClass", "STANDARD"), "hot")
        return StoredObject(key, f"gs://{name}", tier, int(info["size"]), modified)

    def find(self, key: str) -> StoredObject | None:
        try:
            info = self.fs.info(self._path(key), refresh=True)
        except FileNotFoundError:
            return None
        return self._stored(info) if info.get("type") == "file" else None

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def _current(self, key: str) -> dict | None:
        try:
            info = self.fs.info(self._path(key), refresh=True)
        except FileNotFoundError:
            return None
        return info if info.get("type") == "file" else None

    def _write(self, key: str, md5: Callable[[], bytes], size: int, content_addressed: bool, **payload) -> Written:
        current = self._current(key)
        if current is not None and (
            content_addressed or (current.get("md5Hash") and base64.b64decode(current["md5Hash"]) == md5())
        ):
            found = self._stored(current)
            return Written(key, found.uri, found.tier, found.size, False)
        generation = 0 if content_addressed or current is None else int(current["generation"])
        if not self._upload(key, generation, content_addressed, **payload):
            found = self.find(key)
            return Written(key, found.uri, found.tier, found.size, False)
        return Written(key, self.uri(key), WRITE_TIER, size, True)

    def write_bytes(self, key: str, data: bytes, *, content_addressed: bool = False) -> Written:
        return self._write(key, lambda: hashlib.md5(data).digest(), len(data), content_addressed, data=data)

    def write_file(self, key: str, source: Path, *, content_addressed: bool = False) -> Written:
        size = source.stat().st_size
        return self._write(key, lambda: _md5_file(source), size, content_addressed, source=source)

    @contextmanager
    def writer(self, key: str, *, content_addressed: bool = False) -> Iterator[BinaryIO]:
        """A resumable upload: GCS creates the object only when the last chunk arrives, so a writer that
        dies leaves no object and the previous generation in place. On an error the upload is cancelled
        and the handle marked closed, so that garbage collection cannot commit the partial bytes."""
        from gcsfs.retry import ChecksumError

        handle = self.fs.open(self._path(key), "xb" if content_addressed else "wb", block_size=8 << 20)
        try:
            yield handle
        except BaseException:
            # Cancelling is a courtesy: an unfinished upload never becomes an object and GCS drops the
            # session after a week, so a failure to cancel must not hide the original error.
            with suppress(Exception):
                handle.discard()
            handle.closed = True
            raise
        try:
            handle.close()
        except ChecksumError:
            # The object arrived but not as sent: remove exactly that generation, never an older one.
            if handle.generation:
                self._blob(key).delete(if_generation_match=int(handle.generation))
            raise

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="diary-in-") as folder:
            path = Path(folder) / Path(key).name
            self.fs.get_file(self._path(key), str(path))
            yield path

    def scan(self, prefix: str = "") -> Iterator[StoredObject]:
        base = self._path(prefix)
        try:
            found = self.fs.find(base, detail=True, refresh=True)
        except FileNotFoundError:
            return
        for _, info in sorted(found.items()):
            if info.get("type") == "file":
                yield self._stored(info)

    def delete(self, key: str) -> None:
        if self.fs.exists(self._path(key)):
            self.fs.rm_file(self._path(key))

    def move(self, key: str, tier: str) -> StoredObject:
        raise NotImplementedError("on GCS the bucket's lifecycle rules change storage classes")


def open_store(root: str | Path, project: str | None = None, gcs_client: object = None) -> ObjectStore:
    """`gs://bucket/prefix` for Cloud Storage, anything else is a local folder."""
    if str(root).startswith("gs://"):
        return GcsStore(str(root), project=project, client=gcs_client)
    return LocalTieredStore(root)
