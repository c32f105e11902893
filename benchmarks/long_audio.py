"""A long recording through `diary run`: wall time, peak resident memory of the whole process tree, speed.

The recording is built from the shared clips with pauses of varied length, in a different order each
round (an exact repetition makes Whisper loop, which says nothing about real recordings). Memory is the
sum of the resident sizes of `diary run` and all its children (decode sandbox workers), sampled every
0.2 s; the peak is printed. `--compare-minutes N` also transcribes the first N minutes per file in one
pass, per file in windows, and the platform's default way (VAD spans packed in windows, batched) in this
process, and prints each one's WER against the reference texts.

    .venv/bin/python benchmarks/long_audio.py [--hours 2] [--compare-minutes 10]
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

from common import corpus

import numpy as np

from diary_platform.domain.audio.measurements import speech_spans
from diary_platform.domain.speech.transcription import SAMPLE_RATE, Speech, Transcriber, TranscriberConfig
from diary_platform.evaluation import word_error_rate

DIARY = str(Path(sys.executable).parent / "diary")


def build(path: Path, seconds: float, seed: int) -> tuple[float, list[tuple[float, str]]]:
    """Write a WAV of about `seconds` of clips and pauses (0.5–8 s); returns its length in seconds and, per
    clip, when it ends and its reference text."""
    from faster_whisper.audio import decode_audio

    rng = random.Random(seed)
    references = corpus("speech") + corpus("real")
    clips = [(decode_audio(str(r.path), sampling_rate=SAMPLE_RATE), r.text) for r in references]
    spoken: list[tuple[float, str]] = []
    written = 0
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        while written < seconds * SAMPLE_RATE:
            order = clips[:]
            rng.shuffle(order)
            for clip, text in order:
                pause = np.zeros(int(rng.uniform(0.5, 8.0) * SAMPLE_RATE), dtype=np.float32)
                chunk = np.concatenate([clip, pause])
                out.writeframes((np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes())
                spoken.append(((written + len(clip)) / SAMPLE_RATE, text))
                written += len(chunk)
    return written / SAMPLE_RATE, spoken


def _tree_rss_bytes(root: int) -> int:
    """Resident bytes of `root` and every process below it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run_diary(recording: Path, root: Path) -> tuple[float, int, str]:
    """`diary run` on the recording: wall seconds, peak tree RSS, its summary line."""
    env = {**os.environ, "DIARY_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "data" / "dagster_home")}
    subprocess.run([DIARY, "run", "--help"], env=env, capture_output=True, check=True)
    peak = 0
    started = time.monotonic()
    process = subprocess.Popen([DIARY, "run", str(recording)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        peak = max(peak, _tree_rss_bytes(process.pid))
        time.sleep(0.2)
    reader.join()
    wall = time.monotonic() - started
    summary = next((line.strip() for line in reversed(output) if line.startswith("recordings:")), "".join(output[-5:]))
    if process.returncode:
        raise SystemExit(f"diary run failed ({process.returncode}):\n{''.join(output[-20:])}")
    return wall, peak, summary


def compare(recording: Path, spoken: list[tuple[float, str]], minutes: float, root: Path) -> None:
    """The first `minutes` transcribed in one pass and window by window (the default window), each scored
    against the reference texts of the clips in that span. Whisper falls back to sampling on hard
    passages, so two passes of the same path can differ too: scoring against the references is what
    tells whether windows cost accuracy."""
    head = root / "head.wav"
    with wave.open(str(recording), "rb") as wav, wave.open(str(head), "wb") as out:
        out.setparams(wav.getparams())
        out.writeframes(wav.readframes(int(minutes * 60 * SAMPLE_RATE)))
    reference = " ".join(text for end, text in spoken if end <= minutes * 60)
    windowed_config = TranscriberConfig(packing="per_file")
    whole = Transcriber(TranscriberConfig(packing="per_file", window_seconds=minutes * 60 + 1)).transcribe_file(head)
    windowed = Transcriber(windowed_config).transcribe_file(head)
    spans, seconds = speech_spans(head)
    packed = Transcriber(TranscriberConfig()).transcribe_batch([Speech("head", head, spans, seconds)])["head"]
    print(f"first {minutes:g} min, WER against the references: per file in one pass {word_error_rate([reference], [whole.text]):.4f}, "
          f"per file in {windowed_config.window_seconds:g} s windows {word_error_rate([reference], [windowed.text]):.4f}, "
          f"the platform's default (VAD spans in 28 s windows, batched) {word_error_rate([reference], [packed.text]):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--compare-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        recording = root / "long.wav"
        seconds, spoken = build(recording, args.hours * 3600, args.seed)
        print(f"recording: {seconds / 3600:.2f} h, {recording.stat().st_size / 2**20:.0f} MiB as 16 kHz WAV")
        if args.compare_minutes:
            compare(recording, spoken, args.compare_minutes, root)
        wall, peak, summary = run_diary(recording, root)
        print(f"diary run: {summary}")
        print(f"wall {wall:.0f} s · speed {seconds / wall:.1f}x real time · peak resident memory of the process tree "
              f"{peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
