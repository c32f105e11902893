"""Long recordings are transcribed a window at a time: cut at silences, timestamps continuous, memory flat."""

import json
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio

from diary_platform.domain.audio.measurements import speech_spans
from diary_platform.domain.speech.transcription import SAMPLE_RATE, Transcriber, TranscriberConfig, _windows
from diary_platform.evaluation import word_error_rate


def _write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _recording(clips, pause_seconds: float, rounds: int = 1) -> tuple[np.ndarray, list[str]]:
    """The clips one after another with pauses between them (a different order each round), and their texts."""
    parts, texts = [], []
    pause = np.zeros(int(pause_seconds * SAMPLE_RATE), dtype=np.float32)
    for round_ in range(rounds):
        for clip in clips[round_ % len(clips):] + clips[: round_ % len(clips)]:
            parts += [decode_audio(str(clip.path), sampling_rate=SAMPLE_RATE), pause]
            texts.append(clip.text)
    return np.concatenate(parts), texts


def test_windows_are_cut_at_the_quietest_moment_and_lose_no_sample(tmp_path):
    rng = np.random.default_rng(7)
    audio = rng.uniform(-0.5, 0.5, 10 * SAMPLE_RATE).astype(np.float32)
    quiet_at = [int(3.7 * SAMPLE_RATE) // 320 * 320, int(7.1 * SAMPLE_RATE) // 320 * 320]
    for start in quiet_at:
        audio[start : start + 320] = 0.0
    path = _write_wav(tmp_path / "noise.wav", audio)
    with wave.open(str(path), "rb") as wav:
        windows = list(_windows(wav, window=4 * SAMPLE_RATE, search=2 * SAMPLE_RATE))
    assert [offset for offset, _ in windows] == [0, *quiet_at]
    assert all(len(part) <= 4 * SAMPLE_RATE for _, part in windows), "never more than a window in memory"
    assert sum(len(part) for _, part in windows) == len(audio)
    joined = np.concatenate([part for _, part in windows])
    assert np.allclose(joined, np.round(np.clip(audio, -1, 1) * 32767) / 32768, atol=1 / 32768)


def test_a_recording_longer_than_the_window_reads_as_one_transcript_with_continuous_timestamps(clips, tmp_path):
    audio, texts = _recording(clips, pause_seconds=2.0)
    path = _write_wav(tmp_path / "long.wav", audio)
    whole = Transcriber(TranscriberConfig()).transcribe_file(path)
    windowed = Transcriber(TranscriberConfig(window_seconds=60.0)).transcribe_file(path)
    assert len(audio) > 60 * SAMPLE_RATE, "more than one window"
    reference = " ".join(texts)
    # measured here 0.183 against 0.166 (four words of 229); on the 10-minute benchmark, windows do better
    assert word_error_rate([reference], [windowed.text]) <= word_error_rate([reference], [whole.text]) + 0.03
    starts = [s.start for s in windowed.segments]
    assert starts == sorted(starts) and windowed.segments[-1].end <= len(audio) / SAMPLE_RATE + 0.5
    assert windowed.audio_seconds == pytest.approx(len(audio) / SAMPLE_RATE)
    for segment in windowed.segments:  # each segment's time points at its words in the whole transcript
        nearest = min(whole.segments, key=lambda s: abs(s.start - segment.start))
        assert abs(nearest.start - segment.start) < 2.0, (segment, nearest)


PEAK_RSS = textwrap.dedent(
    """
    import resource, subprocess, sys
    child = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
    assert child.returncode == 0
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """
)
TRANSCRIBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from diary_platform.domain.speech.transcription import Speech, Transcriber, TranscriberConfig
    if sys.argv[2] == "batch":
        spans, seconds = json.loads(Path(sys.argv[1] + ".spans.json").read_text())
        config = TranscriberConfig(batch_size=int(sys.argv[3]))
        result = Transcriber(config).transcribe_batch([Speech("r", Path(sys.argv[1]), spans, seconds)])["r"]
    else:
        result = Transcriber(TranscriberConfig(packing="per_file", window_seconds=float(sys.argv[2]))).transcribe_file(sys.argv[1])
    assert result.text
    """
)


def _peak_rss_mib(path: Path, window_seconds: float | str, batch_size: int = 8) -> float:
    """Peak resident memory of a fresh process transcribing `path` (its own, read by its parent at exit):
    per file in windows of `window_seconds`, or "batch": the platform's default, packed windows over the VAD
    spans in `<path>.spans.json` (the validation step finds them, in its own sandboxed process)."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, TRANSCRIBE, str(path), str(window_seconds), str(batch_size)],
        capture_output=True, text=True, timeout=900, check=True,
    )
    return int(out.stdout.split()[-1]) / 1024


def test_memory_stays_flat_with_the_length_of_a_mostly_quiet_half_hour(clips, tmp_path):
    speech, _ = _recording(clips[:2], pause_seconds=1.0)
    half_hour = np.zeros(30 * 60 * SAMPLE_RATE, dtype=np.float32)
    for start in range(0, len(half_hour) - len(speech), 5 * 60 * SAMPLE_RATE):
        half_hour[start : start + len(speech)] = speech
    path = _write_wav(tmp_path / "half_hour.wav", half_hour)
    del half_hour
    windowed = _peak_rss_mib(path, 120.0)
    whole = _peak_rss_mib(path, 3600.0)
    assert windowed < whole - 100, f"windowed {windowed:.0f} MiB vs whole {whole:.0f} MiB"
    assert windowed < 700, f"windowed peak {windowed:.0f} MiB"
    # The default path holds one batch of windows at a time: with batches of 2, two speech blocks
    # apart fill a batch as the half hour's six do, so the peaks differ only by what grows with length.
    short = _write_wav(tmp_path / "short.wav", np.concatenate([speech, np.zeros(60 * SAMPLE_RATE, np.float32), speech]))
    for recording in (path, short):
        Path(f"{recording}.spans.json").write_text(json.dumps(speech_spans(recording)))
    packed, packed_short = _peak_rss_mib(path, "batch", 2), _peak_rss_mib(short, "batch", 2)
    assert packed < packed_short + 60 and packed < 700, f"packed: half hour {packed:.0f} MiB, two blocks {packed_short:.0f} MiB"
