"""What the platform has done: each recording of a batch as a person reads it (for the UI's per-recording
table), and the recent batches (for `diary status`), read from the stored tables."""

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from diary_platform.domain.catalog import BATCH_TABLES, DIARY_NOTES, RAW_AUDIO, TRANSCRIPTS, VALIDATED_AUDIO, Catalog

FIRST_WORDS = 12


def recordings_view(tables: dict[str, pl.DataFrame], costs: pl.DataFrame) -> pl.DataFrame:
    """One row per recording of a batch, from the tables it has so far (by asset name): the file as uploaded,
    who, the status, reason and message of the latest stage, audio and processing seconds, speed and cost
    so far; the first words of the transcript and the note's title and writer once those stages ran."""
    stages = [name for name in BATCH_TABLES if name in tables]
    latest = tables[stages[-1]]
    view = latest.select("recording_id", "user", "status", "reason", "message")
    if RAW_AUDIO in tables:
        view = view.join(tables[RAW_AUDIO].select("recording_id", pl.col("source_name").alias("file")), on="recording_id", how="left")
    else:
        view = view.with_columns(file=pl.lit(None, pl.Utf8))
    seconds = pl.lit(0.0)
    if VALIDATED_AUDIO in tables:
        validated = tables[VALIDATED_AUDIO].select("recording_id", "duration_seconds", "decode_seconds")
        view = view.join(validated, on="recording_id", how="left")
        seconds = seconds + pl.col("decode_seconds").fill_null(0)
    if TRANSCRIPTS in tables:
        transcribed = tables[TRANSCRIPTS].select(
            "recording_id", pl.col("processing_seconds").alias("transcribe_seconds"),
            first_words=pl.col("text").fill_null("").str.split(" ").list.head(FIRST_WORDS).list.join(" "),
        )
        view = view.join(transcribed, on="recording_id", how="left")
        seconds = seconds + pl.col("transcribe_seconds").fill_null(0)
    if DIARY_NOTES in tables:
        notes = tables[DIARY_NOTES].select(
            "recording_id", "latency_seconds", note_title="title",
            written_by=pl.when(pl.col("provider").is_not_null()).then(pl.concat_str("provider", pl.lit("/"), "model")),
        )
        view = view.join(notes, on="recording_id", how="left")
        seconds = seconds + pl.col("latency_seconds").fill_null(0)
    audio = pl.col("duration_seconds").fill_null(0) if "duration_seconds" in view.columns else pl.lit(0.0)
    view = view.with_columns(audio_seconds=audio, processing_seconds=seconds)
    view = view.with_columns(
        speed=pl.when(pl.col("processing_seconds") > 0).then(pl.col("audio_seconds") / pl.col("processing_seconds")),
    ).join(costs.select("recording_id", cost_usd="total_usd"), on="recording_id", how="left")
    extra = [c for c in ("first_words", "note_title", "written_by") if c in view.columns]
    columns = ["file", "user", "recording_id", "status", "reason", "message", "audio_seconds", "processing_seconds", "speed", "cost_usd"]
    return view.select(*columns, *extra)


@dataclass(frozen=True)
class BatchStatus:
    batch_key: str
    recordings: int
    by_status: dict[str, int]
    audio_seconds: float
    transcribe_seconds: float
    cost_usd: float

    @property
    def speed(self) -> float:
        return self.audio_seconds / self.transcribe_seconds if self.transcribe_seconds else 0.0


def recent_batches(catalog: Catalog, costs: Callable[[dict[str, pl.DataFrame]], pl.DataFrame], limit: int = 10) -> list[BatchStatus]:
    """The newest batches; `costs(tables)` prices a batch's recordings (costs.py: compute, models, storage)."""
    keys = catalog.keys(RAW_AUDIO)[::-1]
    batches = []
    for key in keys[:limit]:
        tables = {name: catalog.batch(name, key) for name in BATCH_TABLES if catalog.has(name, key)}
        latest = tables[[name for name in BATCH_TABLES if name in tables][-1]]
        transcripts = tables.get(TRANSCRIPTS)
        batches.append(
            BatchStatus(
                batch_key=key,
                recordings=latest.height,
                by_status=dict(latest.group_by("status").len().iter_rows()),
                audio_seconds=float(transcripts["audio_seconds"].sum()) if transcripts is not None else 0.0,
                transcribe_seconds=float(transcripts["processing_seconds"].sum()) if transcripts is not None else 0.0,
                cost_usd=float(costs(tables)["total_usd"].sum()),
            )
        )
    return batches
