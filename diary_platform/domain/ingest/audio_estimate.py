"""How much audio an upload holds, estimated without decoding it: batches close at an amount of audio,
and the sensor must never decode untrusted bytes (that happens later, in the decode sandbox).

- WAV (RIFF/WAVE, whatever the name says): exact from the header, read within `HEADER_BYTES`; the data
  size is clamped to the bytes really there (headers lie). A header that does not parse, or whose rates
  do not add up, falls back to the size estimate.
- Anything else: size / a nominal byte rate per extension. The rates are low ones for each format, so
  the estimate errs towards more audio: a batch may close early, never run far past its target.
"""

import os
import struct
from pathlib import Path

HEADER_BYTES = 4096
NOMINAL_BYTES_PER_SECOND = {
    "wav": 16_000,  # 8 kHz 16-bit mono, the smallest common PCM
    "wave": 16_000,
    "mp3": 16_000,  # 128 kbit/s
    "m4a": 8_000,  # 64 kbit/s AAC
    "aac": 8_000,
    "mp4": 8_000,
    "ogg": 4_000,  # 32 kbit/s Vorbis/Opus
    "opus": 4_000,
    "webm": 4_000,
    "flac": 64_000,
}
UNKNOWN_BYTES_PER_SECOND = 16_000
_PCM_FORMATS = {1, 3, 0xFFFE}  # integer PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE


def estimate_from_size(name: str, size: int) -> float:
    rate = NOMINAL_BYTES_PER_SECOND.get(Path(name).suffix.lower().lstrip("."), UNKNOWN_BYTES_PER_SECOND)
    return size / rate


def wav_seconds(head: bytes, size: int) -> float | None:
    """Seconds of a RIFF/WAVE file from its first bytes and its size; None when `head` is not a usable header."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    byte_rate = None
    position = 12
    while position + 8 <= len(head):
        chunk_id = head[position : position + 4]
        (chunk_size,) = struct.unpack_from("<I", head, position + 4)
        body = position + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16 or body + 16 > len(head):
                return None
            format_tag, channels, sample_rate, byte_rate, _, bits = struct.unpack_from("<HHIIHH", head, body)
            plausible = 1 <= channels <= 64 and 1_000 <= sample_rate <= 1_000_000 and 0 < byte_rate <= sample_rate * channels * 8
            if not plausible or (format_tag in _PCM_FORMATS and byte_rate != sample_rate * channels * bits // 8):
                return None
        elif chunk_id == b"data":
            if byte_rate is None:
                return None
            present = max(size - body, 0)
            declared = chunk_size if chunk_size not in (0, 0xFFFFFFFF) else present  # 0 / -1: a streamed WAV
            return min(declared, present) / byte_rate
        position = body + chunk_size + (chunk_size & 1)
    return None


def estimate_audio_seconds(name: str, size: int, head: bytes) -> float:
    """The WAV header's duration when `head` has one, else the size estimate for the name's extension."""
    exact = wav_seconds(head, size)
    return exact if exact is not None else estimate_from_size(name, size)


def read_head(path: Path) -> bytes:
    """The first `HEADER_BYTES` of a local upload, opened as the hashing opens it (no symlinks, no FIFO
    blocking); empty when it cannot be read, so that the size estimate applies."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read(HEADER_BYTES)
        except OSError:
            return b""
