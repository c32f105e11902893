"""What the platform has done lately, read from the stored tables (for `diary status`)."""

from dataclasses import dataclass

import polars as pl

from diary_platform.domain.storage import DataStore


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


def recent_batches(store: DataStore, limit: int = 10) -> list[BatchStatus]:
    keys = sorted((p.stem for p in store.tier_path("tables", "validated_audio").glob("*.parquet")), reverse=True)
    batches = []
    for key in keys[:limit]:
        validated = pl.read_parquet(store.table_path("validated_audio", key))
        transcripts_path = store.table_path("transcripts", key)
        notes_path = store.table_path("diary_notes", key)
        transcripts = pl.read_parquet(transcripts_path) if transcripts_path.exists() else None
        notes = pl.read_parquet(notes_path) if notes_path.exists() else None
        batches.append(
            BatchStatus(
                batch_key=key,
                recordings=validated.height,
                by_status=dict(validated.group_by("status").len().iter_rows()),
                audio_seconds=float(transcripts["audio_seconds"].sum()) if transcripts is not None else 0.0,
                transcribe_seconds=float(transcripts["processing_seconds"].sum()) if transcripts is not None else 0.0,
                cost_usd=float(notes["cost_usd"].sum()) if notes is not None else 0.0,
            )
        )
    return batches
