"""Content identity: every recording is known by the sha256 of its bytes."""

import hashlib
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20
RECORDING_ID_HEX_CHARS = 24


def file_digest(path: Path, algorithm: str):
    """The hash of a file's bytes, read in chunks (uploads can be hundreds of MB)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256").hexdigest()


class NotARegularFile(OSError):
    """A FIFO, a device, a socket or a folder where an upload should be."""


def sha256_upload(path: Path) -> tuple[str, os.stat_result]:
    """The sha256 and stat of an upload, opened without following a symlink and without blocking on a FIFO;
    NotARegularFile for anything that is not a plain file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise NotARegularFile(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        digest = hashlib.sha256()
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest(), status


def recording_id_for(content_sha256: str) -> str:
    """96 bits of the content hash: short enough to read in the UI, unique at any realistic scale."""
    return content_sha256[:RECORDING_ID_HEX_CHARS]
