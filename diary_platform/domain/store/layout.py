"""The platform's layout: which key holds what, over an object store, plus the local state folder.

Object keys (in a tier of the local data folder, or under a gs:// prefix):

    audio/original/<sha[:2]>/<sha>.<ext>       originals, stored once per content
    audio/normalised/<sha[:2]>/<sha>.wav       16 kHz mono PCM, what transcription reads
    tables/<asset>/<partition>.parquet          asset values (the IO manager)
    transcripts/<recording_id>.{txt,srt,vtt,json}
    notes/<recording_id>.md
    records/retention/<time>.json               what retention deleted, written before deleting

Local state (always a folder, next to the Dagster instance):

    batches/<yyyy>/<mm>/<dd>/<batch>.json       batch manifests (what each batch holds)
    claims/                                     what has been taken, by which batch (see ingest/claims.py)
    state/                                      breakers and spend (see breakers.py, spend.py)
"""

import hashlib
import io
from pathlib import Path

import polars as pl

from diary_platform.domain.store.objects import WRITE_TIER, LocalTieredStore, ObjectStore, StoredObject, Written, atomic_writer
from diary_platform.domain.store.uploads import UploadSources, upload_suffix

TABLES = "tables"

# Which asset each kind of object belongs to, for the storage report.
ASSET_OF_PREFIX = {
    "audio/original/": "raw_audio",
    "audio/normalised/": "validated_audio",
    "transcripts/": "transcripts",
    "notes/": "diary_notes",
    "records/": "records",
}


class ContentChanged(Exception):
    """An upload changed between the sensor hashing it and ingest copying it."""


def asset_of(key: str) -> str:
    if key.startswith(f"{TABLES}/"):
        return key.split("/")[1]
    return next((asset for prefix, asset in ASSET_OF_PREFIX.items() if key.startswith(prefix)), "other")


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_writer(target) as handle:
        handle.write(data)


def write_text_atomic(target: Path, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


class DataStore:
    """Everything the platform keeps: objects in `objects`; the control state (shared_state.py) is under `state_root`
    unless it lives in Postgres."""

    def __init__(self, state_root: Path | str, objects: ObjectStore | None = None, uploads: UploadSources | None = None):
        """`objects` default to the tiers of the state folder itself (the local layout); `uploads` to local files only."""
        self.state_root = Path(state_root).expanduser().resolve()
        self.objects = objects or LocalTieredStore(self.state_root)
        self.uploads = uploads or UploadSources()

    @staticmethod
    def original_key(content_sha256: str, extension: str) -> str:
        suffix = extension.lower().lstrip(".")
        name = f"{content_sha256}.{suffix}" if suffix else content_sha256
        return f"audio/original/{content_sha256[:2]}/{name}"

    @staticmethod
    def normalised_key(content_sha256: str) -> str:
        return f"audio/normalised/{content_sha256[:2]}/{content_sha256}.wav"

    @staticmethod
    def table_key(asset_name: str, partition_key: str) -> str:
        return f"{TABLES}/{asset_name}/{partition_key}.parquet"

    @staticmethod
    def transcript_key(recording_id: str, extension: str) -> str:
        return f"transcripts/{recording_id}.{extension}"

    @staticmethod
    def note_key(recording_id: str) -> str:
        return f"notes/{recording_id}.md"

    def store_original(self, source: str | Path, content_sha256: str) -> Written:
        """Copy an upload (a local path or `gs://bucket/name#generation`) into content-addressed storage
        once, however often it is uploaded.

        The copy is hashed as it is written; if the upload no longer has the content the sensor hashed,
        `ContentChanged` is raised and nothing is stored. A re-driven recording names its stored original
        as the source, which is then found and not copied.
        """
        key = self.original_key(content_sha256, upload_suffix(str(source)))
        found = self.objects.find(key)
        if found is not None:
            return Written(key, found.uri, found.tier, found.size, False)
        size = 0
        digest = hashlib.sha256()
        with self.uploads.open(str(source)) as src, self.objects.writer(key, content_addressed=True) as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            if digest.hexdigest() != content_sha256:
                raise ContentChanged(f"{source} no longer has the content {content_sha256[:12]}")
        return Written(key, self.objects.uri(key), WRITE_TIER, size, True)

    def write_text(self, key: str, text: str) -> Written:
        return self.objects.write_bytes(key, text.encode("utf-8"))

    def read_text(self, uri: str) -> str:
        return self.objects.read_bytes(self.objects.key(uri)).decode("utf-8")

    def find_uri(self, uri: str) -> StoredObject | None:
        return self.objects.find(self.objects.key(uri))

    def write_table(self, asset_name: str, partition_key: str, frame: pl.DataFrame) -> Written:
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        return self.objects.write_bytes(self.table_key(asset_name, partition_key), buffer.getvalue())

    def read_table(self, asset_name: str, partition_key: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.objects.read_bytes(self.table_key(asset_name, partition_key))))

    def has_table(self, asset_name: str, partition_key: str) -> bool:
        return self.objects.exists(self.table_key(asset_name, partition_key))

    def table_partitions(self, asset_name: str) -> list[str]:
        """Partition keys with a stored table, sorted, whichever tier each is in."""
        return sorted({Path(o.key).stem for o in self.objects.scan(f"{TABLES}/{asset_name}/") if o.key.endswith(".parquet")})
