"""What a recording sounds like: levels, clipping, silence, speech and a quality score, measured while decoding.

Levels come from a streaming meter (constant memory whatever the length); speech comes from the
Silero VAD that faster-whisper ships, run over the normalised WAV a chunk at a time.
"""

import math
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FRAME_SAMPLES = 320  # 20 ms at 16 kHz
SILENCE_DBFS = -50.0
CLIP_LEVEL = 32_700
FLOOR_DBFS = -100.0
VAD_CHUNK_SECONDS = 600

LOW_SAMPLE_RATE = 16_000
CLIPPING_RATIO = 0.001
VERY_QUIET_DBFS = -40.0
MOSTLY_SILENCE_SPEECH_RATIO = 0.1
LOW_SNR_DB = 10.0


def _dbfs(amplitude: float) -> float:
    return max(FLOOR_DBFS, 20 * math.log10(amplitude / 32768.0)) if amplitude > 0 else FLOOR_DBFS


class LevelMeter:
    """Peak, RMS, clipping and a histogram of 20 ms frame levels, fed int16 PCM as it is decoded."""

    def __init__(self):
        self.samples = 0
        self.peak = 0
        self.sum_squares = 0.0
        self.clipped = 0
        self.frame_levels = np.zeros(int(-FLOOR_DBFS) + 1, dtype=np.int64)
        self._carry = np.zeros(0, dtype=np.int16)

    def feed(self, pcm: np.ndarray) -> None:
        if not len(pcm):
            return
        wide = pcm.astype(np.int32)
        self.samples += len(pcm)
        self.peak = max(self.peak, int(np.abs(wide).max()))
        self.sum_squares += float(np.square(wide, dtype=np.float64).sum())
        self.clipped += int((np.abs(wide) >= CLIP_LEVEL).sum())
        joined = np.concatenate([self._carry, pcm])
        whole = len(joined) // FRAME_SAMPLES * FRAME_SAMPLES
        self._carry = joined[whole:]
        if whole:
            frames = joined[:whole].astype(np.float64).reshape(-1, FRAME_SAMPLES)
            rms = np.sqrt(np.square(frames).mean(axis=1))
            levels = np.where(rms > 0, 20 * np.log10(np.maximum(rms, 1e-9) / 32768.0), FLOOR_DBFS)
            bins = np.clip(np.round(-np.maximum(levels, FLOOR_DBFS)), 0, -FLOOR_DBFS).astype(np.int64)
            self.frame_levels += np.bincount(bins, minlength=len(self.frame_levels))

    def level_at_percentile(self, percentile: float) -> float:
        """The frame level (dBFS) below which `percentile` % of frames lie."""
        counts = self.frame_levels[::-1]  # from the floor up
        total = counts.sum()
        if not total:
            return FLOOR_DBFS
        index = int(np.searchsorted(np.cumsum(counts), total * percentile / 100))
        return float(FLOOR_DBFS + index)

    @property
    def silence_ratio(self) -> float:
        total = self.frame_levels.sum()
        silent = self.frame_levels[int(-SILENCE_DBFS) :].sum()
        return float(silent / total) if total else 1.0


def speech_spans(wav_path: Path) -> tuple[list[tuple[float, float]], float]:
    """Where the Silero VAD hears speech, as (start, end) seconds, and the WAV's length in seconds.

    The WAV is read ten minutes at a time. The options are faster-whisper's defaults, the ones its own
    `vad_filter` uses, so the transcription step can take these spans instead of running the VAD again.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions()
    spans = []
    total = 0
    with wave.open(str(wav_path), "rb") as wav:
        rate = wav.getframerate()
        while chunk := wav.readframes(VAD_CHUNK_SECONDS * rate):
            audio = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
            spans += [
                (round((total + s["start"]) / rate, 3), round((total + s["end"]) / rate, 3))
                for s in get_speech_timestamps(audio, options)
            ]
            total += len(audio)
    return spans, total / rate if total else 0.0


def speech_share(spans: list[tuple[float, float]], seconds: float) -> float:
    return min(1.0, sum(end - start for start, end in spans) / seconds) if seconds else 0.0


@dataclass(frozen=True)
class Measurements:
    peak_dbfs: float
    rms_dbfs: float
    clipping_ratio: float
    silence_ratio: float
    speech_ratio: float
    snr_db: float
    quality_score: float
    warnings: list[str] = field(default_factory=list)
    speech_spans: list[tuple[float, float]] = field(default_factory=list)


def assess(meter: LevelMeter, spans: list[tuple[float, float]], seconds: float, source_sample_rate: int, partial: bool) -> Measurements:
    """Levels and speech into warnings a person should look at, and a 0–1 quality score."""
    speech = speech_share(spans, seconds)
    rms = math.sqrt(meter.sum_squares / meter.samples) if meter.samples else 0.0
    rms_dbfs = _dbfs(rms)
    clipping = meter.clipped / meter.samples if meter.samples else 0.0
    snr = meter.level_at_percentile(95) - meter.level_at_percentile(10)
    checks = [
        ("low_sample_rate", 0 < source_sample_rate < LOW_SAMPLE_RATE, 0.85),
        ("clipping", clipping > CLIPPING_RATIO, 0.7),
        ("very_quiet", rms_dbfs < VERY_QUIET_DBFS, 0.7),
        ("mostly_silence", speech < MOSTLY_SILENCE_SPEECH_RATIO, 0.3),
        ("low_snr", speech >= MOSTLY_SILENCE_SPEECH_RATIO and snr < LOW_SNR_DB, 0.6),
        ("partial", partial, 0.8),
    ]
    score = 1.0
    warnings = []
    for name, raised, factor in checks:
        if raised:
            warnings.append(name)
            score *= factor
    return Measurements(
        peak_dbfs=round(_dbfs(meter.peak), 2),
        rms_dbfs=round(rms_dbfs, 2),
        clipping_ratio=round(clipping, 6),
        silence_ratio=round(meter.silence_ratio, 4),
        speech_ratio=round(speech, 4),
        snr_db=round(snr, 1),
        quality_score=round(score, 3),
        warnings=warnings,
        speech_spans=spans,
    )
