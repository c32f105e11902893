"""Shared by the benchmarks: the eval corpus, a raw faster-whisper baseline and a platform run."""

import math
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from diary_platform.domain.speech import transcription  # noqa: E402
from diary_platform.evaluation import Reference, read_manifest  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"


def corpus(name: str) -> list[Reference]:
    """A set of ../shared/eval by name, or the committed test clips when ../shared is absent."""
    manifest = EVAL / name / "manifest.jsonl"
    if manifest.exists():
        return read_manifest(manifest)
    print(f"note: {manifest} not found, using the committed test clips", file=sys.stderr)
    return read_manifest(REPO / "diary_platform_tests" / "data" / "manifest.jsonl")


def raw_model(config: transcription.TranscriberConfig):
    from faster_whisper import WhisperModel

    location, _ = transcription.resolve_model(config.model)
    return WhisperModel(location, device=config.device, compute_type=config.compute_type, cpu_threads=config.cpu_threads)


def raw_transcribe(
    files: list[Path], config: transcription.TranscriberConfig, model=None, batch_size: int = 0
) -> tuple[list[str], float]:
    """Plain faster-whisper, each file in turn (decoding included), with faster-whisper's own VAD; the way
    transcription servers do it. `batch_size` > 0: its batched pipeline per file. Without `model`, loading
    it is timed too. Returns texts and wall seconds."""
    from faster_whisper import BatchedInferencePipeline

    started = time.perf_counter()
    model = model or raw_model(config)
    engine = BatchedInferencePipeline(model) if batch_size else model
    options = {"batch_size": batch_size} if batch_size else {}
    texts = []
    for path in files:
        segments, _ = engine.transcribe(
            str(path), language=config.language, beam_size=config.beam_size, vad_filter=config.vad_filter, **options
        )
        texts.append(" ".join(s.text.strip() for s in segments).strip())
    return texts, time.perf_counter() - started


def platform_transcribe(files: list[Path], instance, warm: bool = False, **transcriber) -> tuple[list[str], float, float]:
    """One batch through the whole asset graph in this process, on a fresh data folder.

    `instance` is a Dagster instance that already exists (as a deployment's does), so its one-off
    set-up is not counted. Unless `warm`, the model is not cached from an earlier round: the platform
    loads its own. `transcriber` overrides the configured transcription settings.
    Returns texts (in file order), wall seconds and audio seconds.
    """
    from diary_platform.runner import process_files
    from diary_platform.settings import Settings

    if not warm:
        transcription._models.clear()
    with tempfile.TemporaryDirectory() as root:
        overrides = {"transcriber": transcriber} if transcriber else {}
        one_batch = {"max_files": len(files), "work_seconds": math.inf}
        settings = Settings(data_dir=Path(root) / "data", batch_limits=one_batch, **overrides)
        report = process_files(files, "bench", settings, instance)
    by_file = {Path(r.file).resolve(): r for r in report.results}
    texts = [by_file[path.resolve()].transcript or "" for path in files]
    return texts, report.wall_seconds, report.audio_seconds


@contextmanager
def dagster_instance():
    """A SQLite instance in a temp folder, set up once before any timing."""
    import dagster as dg

    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home) as instance:
        instance.add_dynamic_partitions("batches", ["warm-up"])
        yield instance


def median(values: list[float]) -> float:
    return statistics.median(values)
