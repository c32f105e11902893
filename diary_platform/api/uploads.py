"""A multipart upload streamed to a file as it arrives: hashed and counted on the way, never held whole.

The request body goes through python-multipart's incremental parser chunk by chunk; the `file` part is
written to a hidden temporary file beside its destination (the landing sensor ignores hidden names), the
small text fields are kept (at most 8 KiB each). Past `max_bytes` the file is dropped and the rest of
the body is read and discarded (up to `DRAIN_BYTES`, so that the client gets its 413 rather than a reset
connection, without the server keeping anything), and the upload fails with `TooLarge`.
"""

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

FIELD_LIMIT = 8 * 1024
DRAIN_BYTES = 1024**3
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadRejected(Exception):
    """The upload cannot be taken: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class TooLarge(UploadRejected):
    def __init__(self, limit: int):
        super().__init__(413, f"the file is larger than {limit} bytes")


@dataclass
class ReceivedUpload:
    """The streamed file (a temporary path), what it holds, and the form's other fields."""

    path: Path | None = None
    filename: str = ""
    size: int = 0
    sha256: str = ""
    head: bytes = b""
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def safe_name(filename: str) -> str:
    """The client's file name reduced to a harmless one: no folders, no hidden name, a bounded length."""
    name = _SAFE.sub("_", Path(filename.replace("\\", "/")).name).strip("._") or "upload"
    stem, dot, extension = name.rpartition(".")
    return f"{stem[:80]}.{extension[:10]}" if dot and stem else name[:90]


async def receive(
    content_type: str,
    chunks: AsyncIterator[bytes],
    folder: Path,
    max_bytes: int,
    on_bytes: Callable[[int], Awaitable[None]],
) -> ReceivedUpload:
    """Stream the form's `file` part into a hidden file in `folder`. `on_bytes(n)` is awaited for every chunk
    of the body (rate limits: it raises UploadRejected to stop)."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadRejected(415, "send multipart/form-data with the recording in a field named 'file'")
    folder.mkdir(parents=True, exist_ok=True)
    upload = ReceivedUpload()
    state = _PartState()
    digest = hashlib.sha256()
    handle = None
    too_large = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        if state.header_name.lower() == b"content-disposition":
            _, disposition = parse_options_header(state.header_value)
            state.name = disposition.get(b"name", b"").decode("utf-8", "replace")
            state.filename = disposition.get(b"filename", b"").decode("utf-8", "replace") if b"filename" in disposition else None
        state.header_name, state.header_value = b"", b""

    def on_part_begin() -> None:
        state.reset()

    def on_headers_finished() -> None:
        nonlocal handle
        if state.name == "file" and handle is None and upload.path is None:
            upload.filename = state.filename or "upload"
            upload.path = folder / f".{uuid.uuid4().hex}.part"
            handle = open(upload.path, "wb")
            state.is_file = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal too_large
        piece = data[start:end]
        if state.is_file:
            if too_large:
                return
            upload.size += len(piece)
            if upload.size > max_bytes:
                too_large = True
                return
            digest.update(piece)
            if len(upload.head) < 4096:
                upload.head += piece[: 4096 - len(upload.head)]
            handle.write(piece)
        elif len(state.value) + len(piece) <= FIELD_LIMIT:
            state.value += piece

    def on_part_end() -> None:
        nonlocal handle
        if state.is_file:
            handle.close()
            handle = None
            state.is_file = False
        elif state.name:
            upload.fields[state.name] = state.value.decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if too_large and received > max_bytes + DRAIN_BYTES:
                break
            if not too_large:
                await on_bytes(len(chunk))
            parser.write(chunk)
        parser.finalize()
    except UploadRejected:
        raise
    except Exception as error:  # the multipart parser's errors: a malformed body
        raise UploadRejected(400, f"the multipart body cannot be read: {error}") from None
    finally:
        if handle is not None:
            handle.close()
        if too_large or upload.path is None:
            upload.discard()
    if too_large:
        raise TooLarge(max_bytes)
    if upload.path is None:
        raise UploadRejected(400, "no file: send the recording in a multipart field named 'file'")
    if upload.size == 0:
        upload.discard()
        raise UploadRejected(400, "the file is empty")
    upload.sha256 = digest.hexdigest()
    return upload


@dataclass
class _PartState:
    header_name: bytes = b""
    header_value: bytes = b""
    name: str = ""
    filename: str | None = None
    value: bytes = b""
    is_file: bool = False

    def reset(self) -> None:
        self.header_name = self.header_value = self.value = b""
        self.name, self.filename, self.is_file = "", None, False


def place(upload: ReceivedUpload, destination: Path) -> None:
    """Move the streamed file to its landing name in one rename (same folder tree: atomic)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(upload.path, destination)
    upload.path = None
