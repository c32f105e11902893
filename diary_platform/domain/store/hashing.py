"""Content identity: every recording is known by the sha256 of its bytes."""

import hashlib
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


def recording_id_for(content_sha256: str) -> str:
    """96 bits of the content hash: short enough to read in the UI, unique at any realistic scale."""
    return content_sha256[:RECORDING_ID_HEX_CHARS]
