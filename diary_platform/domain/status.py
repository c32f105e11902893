"""What the platform has done lately, read from the stored tables (for `diary status`)."""

from dataclasses import dataclass

from diary_platform.domain.catalog import DIARY_NOTES, TRANSCRIPTS, VALIDATED_AUDIO, Catalog


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


def recent_batches(catalog: Catalog, limit: int = 10) -> list[BatchStatus]:
    keys = sorted(catalog.keys(VALIDATED_AUDIO), reverse=True)
    batches = []
    for key in keys[:limit]:
        validated = catalog.batch(VALIDATED_AUDIO, key)
        transcripts = catalog.batch(TRANSCRIPTS, key) if catalog.has(TRANSCRIPTS, key) else None
        notes = catalog.batch(DIARY_NOTES, key) if catalog.has(DIARY_NOTES, key) else None
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
