"""The stored tables by name: one batch's table, the batches of a day, the latest row of every recording.

Every asset value is a table stored per partition (see layout.py). Code that reads tables outside the
asset graph (the CLI, the quarantine, the daily assets, the status) goes through here, so the names
and the ways of combining partitions live in one place.
"""

from datetime import date

import polars as pl

from diary_platform.domain.ingest.batches import batch_order, batch_time
from diary_platform.domain.store.layout import DataStore

RAW_AUDIO = "raw_audio"
VALIDATED_AUDIO = "validated_audio"
TRANSCRIPTS = "transcripts"
DIARY_NOTES = "diary_notes"
DAILY_DIGEST = "daily_digest"
COST_REPORT = "cost_report"
STORAGE_TIERS = "storage_tiers"

# What one ingest batch goes through, in order: the batch job's assets.
BATCH_TABLES = (RAW_AUDIO, VALIDATED_AUDIO, TRANSCRIPTS, DIARY_NOTES)


def latest_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Of rows from several batches, each recording's row from the newest batch."""
    if rows.is_empty():
        return rows
    order = pl.col("batch_key").map_elements(batch_order, return_dtype=pl.Utf8)
    return rows.sort(order).group_by("recording_id", maintain_order=True).last()


class Catalog:
    def __init__(self, store: DataStore):
        self.store = store

    def keys(self, name: str) -> list[str]:
        """Partition keys with a stored table, sorted (batches by when they were made)."""
        keys = self.store.table_partitions(name)
        return sorted(keys, key=batch_order) if name in BATCH_TABLES else keys

    def has(self, name: str, key: str) -> bool:
        return self.store.has_table(name, key)

    def batch(self, name: str, key: str) -> pl.DataFrame:
        return self.store.read_table(name, key)

    def created_between(self, name: str, first: date, last: date) -> pl.DataFrame:
        """The tables of every batch created on the days from `first` to `last`, as one table."""
        keys = [key for key in self.keys(name) if first <= batch_time(key).date() <= last]
        return self._concat(self.batch(name, key) for key in keys)

    def of_day(self, name: str, day: date) -> pl.DataFrame:
        return self.created_between(name, day, day)

    def every_batch(self, name: str) -> pl.DataFrame:
        """The tables of all batches as one table, oldest batch first."""
        return self._concat(self.batch(name, key) for key in self.keys(name))

    def latest(self, name: str) -> pl.DataFrame:
        """Each recording's row from the newest batch that holds it."""
        return latest_rows(self.every_batch(name))

    def recordings_of_batch(self, key: str) -> dict[str, dict[str, dict]]:
        """Per content hash, its row in each of the batch's tables that exists so far."""
        joined: dict[str, dict[str, dict]] = {}
        for name in BATCH_TABLES:
            if self.has(name, key):
                for row in self.batch(name, key).iter_rows(named=True):
                    joined.setdefault(row["content_sha256"], {})[name] = row
        return joined

    @staticmethod
    def _concat(frames) -> pl.DataFrame:
        frames = list(frames)
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
