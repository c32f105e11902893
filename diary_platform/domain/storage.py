"""The data folder: atomic writes, content-addressed originals, one place that knows the layout.

Layout under the data root (the hot tier; the storage issue adds warm and cold beside it):

    hot/audio/original/<sha[:2]>/<sha>.<ext>       originals, stored once per content
    hot/audio/normalised/<sha[:2]>/<sha>.wav       16 kHz mono PCM, what transcription reads
    hot/tables/<asset>/<partition>.parquet          asset values (the IO manager)
    hot/transcripts/<recording_id>.{txt,srt,vtt,json}
    hot/notes/<recording_id>.md
    batches/<yyyy>/<mm>/<dd>/<batch>.json          batch manifests (what each batch holds)
    ledger/                                         what has been ingested (see ledger.py)
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

HOT_TIER = "hot"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_writer(target) as handle:
        handle.write(data)


def write_text_atomic(target: Path, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def copy_file_atomic(source: Path, target: Path) -> None:
    with open(source, "rb") as src, atomic_writer(target) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def path_from_uri(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"only local storage is supported so far, got {uri}")
    return Path(unquote(parsed.path))


class DataStore:
    """Paths of everything the platform keeps, relative to one data root."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()

    def tier_path(self, *parts: str) -> Path:
        return self.root.joinpath(HOT_TIER, *parts)

    def original_audio_path(self, content_sha256: str, extension: str) -> Path:
        suffix = extension.lower().lstrip(".")
        name = f"{content_sha256}.{suffix}" if suffix else content_sha256
        return self.tier_path("audio", "original", content_sha256[:2], name)

    def normalised_audio_path(self, content_sha256: str) -> Path:
        return self.tier_path("audio", "normalised", content_sha256[:2], f"{content_sha256}.wav")

    def table_path(self, asset_name: str, partition_key: str) -> Path:
        return self.tier_path("tables", asset_name, f"{partition_key}.parquet")

    def transcript_path(self, recording_id: str, extension: str) -> Path:
        return self.tier_path("transcripts", f"{recording_id}.{extension}")

    def note_path(self, recording_id: str) -> Path:
        return self.tier_path("notes", f"{recording_id}.md")

    @property
    def batches_root(self) -> Path:
        return self.root / "batches"

    @property
    def ledger_root(self) -> Path:
        return self.root / "ledger"

    def store_original(self, source: Path, content_sha256: str) -> tuple[Path, bool]:
        """Copy an upload into content-addressed storage once; returns (path, newly_written)."""
        target = self.original_audio_path(content_sha256, source.suffix)
        if target.exists() and target.stat().st_size == source.stat().st_size:
            return target, False
        copy_file_atomic(source, target)
        return target, True
