"""Transcription models measured on a golden set: word error rate, speed and memory, one row per model,
and the gate a candidate passes before it may replace the baseline.

Each clip is decoded once (to a 16 kHz WAV, with its VAD speech spans, as the validation stage does) and
every model transcribes all clips the way the transcripts stage does (`Transcriber.transcribe_batch`).
The golden sets are the operators' own files, not uploads, so they are decoded here, without the sandbox.

- `wer`: corpus WER (jiwer over text run through Whisper's English normaliser, diary_platform/evaluation.py).
- `real_time_factor`: seconds of transcription per second of audio. Not counted (`load_seconds`): the model's
  load and, for a model not yet used in this process, a warm-up on the shortest clip (a first inference pays
  one-off costs).
- `peak_rss_mb`: how far the process's resident memory rose above where it stood when the model's turn began
  (its load included): Linux's exact peak (`VmHWM` of /proc/self/status) when the turn set a new peak for the
  process, else the highest `VmRSS` sampled every 10 ms; elsewhere the growth of `resource.getrusage`'s
  `ru_maxrss`. Host memory only: a model on a GPU holds its weights in GPU memory, not counted here.

A model whose fingerprint equals one measured before in the same evaluation (two ids, one set of settings)
gets that model's measurements: the fingerprint covers everything that decides a transcript.
"""

import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from diary_platform.domain.audio.decode import decode_to_wav
from diary_platform.domain.audio.measurements import speech_spans
from diary_platform.domain.models.registry import fingerprint
from diary_platform.domain.speech.transcription import Speech, Transcriber, TranscriberConfig, load_model
from diary_platform.evaluation import Reference, read_manifest, word_error_rate

MODEL_EVALUATION = "model_evaluation"
SCHEMA = {
    "model_id": pl.Utf8,
    "fingerprint": pl.Utf8,
    "clips": pl.Int64,
    "audio_seconds": pl.Float64,
    "wer": pl.Float64,
    "real_time_factor": pl.Float64,
    "load_seconds": pl.Float64,
    "peak_rss_mb": pl.Float64,
    "evaluated_at": pl.Datetime("us", "UTC"),
}


# Models (process-wide, never unloaded: their ids stay theirs) that have run once in this process.
_warmed: set[int] = set()


def golden_references(manifests: Iterable[Path]) -> list[Reference]:
    """The clips of every manifest (`file` relative to the manifest, `text`), in order."""
    return [reference for manifest in manifests for reference in read_manifest(Path(manifest))]


def evaluate(models: list[tuple[str, TranscriberConfig]], references: list[Reference]) -> pl.DataFrame:
    """One row per model (see the module's docstring), in the order given."""
    if not references:
        raise ValueError("no golden clips to evaluate on")
    texts = [reference.text for reference in references]
    rows: list[dict] = []
    measured: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="diary-eval-") as folder:
        clips = _decode(references, Path(folder))
        audio_seconds = sum(clip.seconds for clip in clips)
        for model_id, config in models:
            version = fingerprint(config)
            if version not in measured:
                measured[version] = _measure(config, clips, texts, audio_seconds)
            rows.append({"model_id": model_id, "fingerprint": version, "clips": len(clips), "audio_seconds": audio_seconds,
                         **measured[version]})
    return pl.DataFrame(rows, schema=SCHEMA)


def _decode(references: list[Reference], folder: Path) -> list[Speech]:
    clips = []
    for index, reference in enumerate(references):
        wav = folder / f"{index:05d}.wav"
        decode_to_wav(reference.path, wav)
        spans, seconds = speech_spans(wav)
        clips.append(Speech(f"{index:05d}", wav, spans, seconds))
    return clips


def _measure(config: TranscriberConfig, clips: list[Speech], texts: list[str], audio_seconds: float) -> dict:
    with _PeakMemory() as memory:
        started = time.perf_counter()
        model = load_model(config)  # the process-wide model the Transcriber uses; loaded once
        transcriber = Transcriber(config)
        if id(model) not in _warmed:  # a model's first inference pays one-off costs: on the shortest clip, untimed
            transcriber.transcribe_batch([min(clips, key=lambda clip: clip.seconds)])
            _warmed.add(id(model))
        loaded = time.perf_counter()
        transcripts = transcriber.transcribe_batch(clips)
        finished = time.perf_counter()
    hypotheses = [transcripts[clip.key].text for clip in clips]
    return {
        "wer": float(word_error_rate(texts, hypotheses)),
        "real_time_factor": (finished - loaded) / audio_seconds if audio_seconds else 0.0,
        "load_seconds": loaded - started,
        "peak_rss_mb": memory.peak_growth_mb,
        "evaluated_at": datetime.now(timezone.utc),
    }


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


@dataclass
class _PeakMemory:
    """The rise of resident memory over a block (see the module's docstring), in MB."""

    peak_growth_mb: float = 0.0

    def __enter__(self) -> "_PeakMemory":
        self._start = _status_kb("VmRSS")
        self._start_peak = _status_kb("VmHWM") if self._start is not None else _maxrss_kb()
        self._sampled = self._start or 0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True) if self._start is not None else None
        if self._sampler:
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self._sampled = max(self._sampled, _status_kb("VmRSS") or 0)

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._sampler is None:  # no /proc: the growth of the process's peak
            self.peak_growth_mb = max(0, _maxrss_kb() - self._start_peak) / 1024
            return
        self._sampler.join()
        peak = _status_kb("VmHWM") or 0
        highest = peak if peak > self._start_peak else max(self._sampled, _status_kb("VmRSS") or 0)
        self.peak_growth_mb = max(0, highest - self._start) / 1024


@dataclass(frozen=True)
class Verdict:
    """Whether every candidate is within the margin of the baseline's WER, on an evaluation that measured them
    all with their current settings (`unmeasured`: those it did not)."""

    baseline: str
    baseline_wer: float | None
    max_wer_increase: float
    deltas: dict[str, float]  # candidate -> its WER minus the baseline's
    unmeasured: tuple[str, ...] = ()

    @property
    def worse(self) -> list[str]:
        return [candidate for candidate, delta in self.deltas.items() if delta > self.max_wer_increase + 1e-12]

    @property
    def passed(self) -> bool:
        return not self.worse and not self.unmeasured


def promotion_gate(evaluation: pl.DataFrame, expected: dict[str, str], baseline: str, max_wer_increase: float) -> Verdict:
    """The gate on an evaluation table. `expected`: model id -> fingerprint of the baseline and every candidate as
    the registry now has them; a model the table lacks, or measured with other settings, is `unmeasured`."""
    rows = {row["model_id"]: row for row in evaluation.iter_rows(named=True)}
    unmeasured = tuple(m for m, version in expected.items() if m not in rows or rows[m]["fingerprint"] != version)
    if baseline in unmeasured:
        return Verdict(baseline, None, max_wer_increase, {}, unmeasured)
    base = rows[baseline]["wer"]
    deltas = {m: rows[m]["wer"] - base for m in expected if m != baseline and m not in unmeasured}
    return Verdict(baseline, base, max_wer_increase, deltas, unmeasured)
