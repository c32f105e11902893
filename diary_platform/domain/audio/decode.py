"""Probing and decoding uploads with PyAV into the 16 kHz mono PCM that Whisper models read.

Decoding happens once per recording: the normalised audio is streamed into a 16-bit WAV and the
transcription stage reads that file. The samples are exactly what faster-whisper's own
`decode_audio` would produce (s16 mono 16 kHz from FFmpeg's resampler, scaled to float32).

Uploads are untrusted, so this runs inside the decode sandbox (sandbox.py), and it checks what it can
before decoding a single packet: size, playlists, the container and codec allowlists.
"""

import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from diary_platform.domain.store.layout import atomic_writer

SAMPLE_RATE = 16_000
DEFAULT_MAX_DECODED_SECONDS = 4 * 3600.0

# FFmpeg demuxer names of the containers people upload voice recordings in: WAV/W64 and AIFF (recorders,
# telephony), FLAC, MP3, MP4/M4A/3GP (phones' voice memos), Ogg and WebM/Matroska (browsers, messengers),
# CAF (Apple), AMR (older phones). Anything else, playlists (hls, concat) above all, is refused.
ALLOWED_CONTAINERS = {
    "wav", "w64", "aiff", "flac", "mp3", "mov,mp4,m4a,3gp,3g2,mj2", "ogg", "matroska,webm", "caf", "amr",
}
ALLOWED_CODECS = {
    "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le", "pcm_u8", "pcm_s16be", "pcm_s24be",
    "pcm_mulaw", "pcm_alaw", "adpcm_ima_wav", "flac", "mp3", "mp3float", "aac", "alac", "vorbis", "opus",
    "libopus", "amrnb", "amrwb",
}
PLAYLIST_MAGIC = (b"#EXTM3U", b"ffconcat", b"#EXT-X", b"[playlist]")


class AudioRejected(Exception):
    """A recording that cannot become audio; `reason` is a stable code, the message is for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class AudioInfo:
    container: str
    codec: str
    source_sample_rate: int
    channels: int
    bitrate: int | None
    declared_seconds: float | None
    decoded_seconds: float
    decode_error: bool

    @property
    def partial(self) -> bool:
        """Decoding broke off, or yielded under 90% of what the header declares."""
        short = self.declared_seconds is not None and self.decoded_seconds < 0.9 * self.declared_seconds
        return self.decode_error or short


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _ffmpeg_says(error: av.error.FFmpegError) -> str:
    """FFmpeg's own words, without the errno and internal storage path it appends."""
    return f"FFmpeg: {error.strerror}" if getattr(error, "strerror", None) else type(error).__name__


def _refuse_playlists(source: Path) -> None:
    with open(source, "rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(PLAYLIST_MAGIC):
        raise AudioRejected("playlist", "Playlists and concat lists are not recordings and are never opened.")


def decode_to_wav(
    source: Path,
    target: Path,
    max_seconds: float = DEFAULT_MAX_DECODED_SECONDS,
    on_pcm: Callable[[np.ndarray], None] = lambda pcm: None,
) -> AudioInfo:
    """Stream-decode `source` into a 16 kHz mono WAV at `target`, never holding the audio in memory.

    Stops as soon as the decoded audio passes `max_seconds` (headers lie, so the limit is enforced on
    decoded samples). `on_pcm` sees every int16 chunk written. On rejection nothing is left at `target`.
    """
    if source.stat().st_size == 0:
        raise AudioRejected("empty_file", "The file is empty (0 bytes).")
    _refuse_playlists(source)
    try:
        container = av.open(
            str(source), mode="r", metadata_errors="ignore", options={"protocol_whitelist": "file"}
        )
    except av.error.FFmpegError as error:
        raise AudioRejected("undecodable", f"Not a readable audio file ({_ffmpeg_says(error)}).") from error
    with container:
        if container.format.name not in ALLOWED_CONTAINERS:
            raise AudioRejected(
                "unsupported_format", f"Files in the {container.format.long_name!r} format are not accepted."
            )
        if not container.streams.audio:
            raise AudioRejected("no_audio_stream", "The file holds no audio stream.")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        if codec not in ALLOWED_CODECS:
            raise AudioRejected("unsupported_codec", f"Audio encoded with {codec!r} is not accepted.")
        with atomic_writer(target) as handle, wave.open(handle, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            decoded, decode_error = _stream_pcm(container, stream, wav, max_seconds, on_pcm)
            if decoded == 0:
                raise AudioRejected("no_audio_decoded", "The file decoded to no audio samples.")
        return AudioInfo(
            container=container.format.name,
            codec=codec,
            source_sample_rate=stream.codec_context.sample_rate or 0,
            channels=stream.codec_context.channels or 0,
            bitrate=stream.codec_context.bit_rate or container.bit_rate or None,
            declared_seconds=_declared_seconds(container, stream),
            decoded_seconds=decoded / SAMPLE_RATE,
            decode_error=decode_error,
        )


def _stream_pcm(container, stream, wav, max_seconds: float, on_pcm) -> tuple[int, bool]:
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    max_samples = int(max_seconds * SAMPLE_RATE)
    decoded = 0
    frames = container.decode(stream)
    while True:
        decode_error = False
        try:
            frame = next(frames)
        except StopIteration:
            frame = None
        except av.error.InvalidDataError:
            continue
        except av.error.FFmpegError as error:
            if decoded == 0:
                raise AudioRejected("undecodable", f"The audio could not be decoded ({_ffmpeg_says(error)}).") from error
            decode_error = True
            frame = None
        if frame is not None:
            frame.pts = None
        for out in resampler.resample(frame):
            pcm = out.to_ndarray().reshape(-1).astype("<i2", copy=False)
            wav.writeframes(pcm.tobytes())
            on_pcm(pcm)
            decoded += len(pcm)
        if decoded > max_samples:
            raise AudioRejected(
                "too_long", f"The audio runs past the {max_seconds / 3600:g} h limit; decoding stopped there."
            )
        if frame is None:
            return decoded, decode_error


def pcm16_to_float(frames: bytes) -> np.ndarray:
    """16-bit little-endian PCM as the float32 samples faster-whisper takes."""
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        if wav.getframerate() != SAMPLE_RATE or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{path} is not 16 kHz mono 16-bit PCM")
        return pcm16_to_float(wav.readframes(wav.getnframes()))
