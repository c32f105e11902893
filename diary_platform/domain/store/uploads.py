"""Where an upload is read from when it is copied into storage: a local path, or one generation of a
Cloud Storage object (`gs://bucket/name#generation`, as the bucket sensor names them).

Pinning the generation means the copy reads exactly the bytes the sensor saw: an object rewritten since
is another file (taken again by the sensor), and the old generation, once gone, is `source_missing`.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

_READ_CHUNK = 8 << 20


def object_uri(bucket: str, name: str, generation: int) -> str:
    return f"gs://{bucket}/{name}#{generation}"


def parse_object_uri(uri: str) -> tuple[str, str, int]:
    """Bucket, object name and generation of `gs://bucket/name#generation`."""
    location, _, generation = uri.removeprefix("gs://").rpartition("#")
    bucket, _, name = location.partition("/")
    if not (bucket and name and generation.isdigit()):
        raise ValueError(f"{uri!r} is not gs://bucket/name#generation")
    return bucket, name, int(generation)


def upload_suffix(source: str) -> str:
    """The file extension of an upload, from its path or object name, never from a `#generation`."""
    location, mark, generation = source.rpartition("#")
    pinned = source.startswith("gs://") and mark and generation.isdigit()
    return Path(location if pinned else source).suffix


class UploadSources:
    """Opens uploads for reading; a google-cloud-storage client is made (by `gcs_client`) only when an
    upload in a bucket is first read."""

    def __init__(self, gcs_client: Callable[[], Any] | None = None):
        self._gcs_client = gcs_client

    @contextmanager
    def open(self, source: str) -> Iterator[BinaryIO]:
        """FileNotFoundError when the upload (or that generation of it) is gone."""
        if not source.startswith("gs://"):
            if not Path(source).is_file():
                raise FileNotFoundError(f"The upload {source} is gone.")
            with open(source, "rb") as handle:
                yield handle
            return
        from google.api_core.exceptions import NotFound

        if self._gcs_client is None:
            raise ValueError(f"{source} needs a google-cloud-storage client")
        bucket, name, generation = parse_object_uri(source)
        blob = self._gcs_client().bucket(bucket).blob(name, generation=generation)
        try:
            with blob.open("rb", chunk_size=_READ_CHUNK) as handle:
                yield handle
        except NotFound:
            raise FileNotFoundError(f"The upload {source} is gone (the object, or this generation of it).") from None
