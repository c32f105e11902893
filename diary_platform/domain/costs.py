"""What processing cost, per recording and summed per user and day: compute, language models, storage.

Compute is the measured decode seconds (CPU) and transcription seconds (GPU when it ran on one) times
the worker price; language-model cost is what the notes were booked at (list, batch and cached-input rates
from the price table; the savings against list prices apart); storage is the bytes a
recording's files take (original, normalised audio, transcript files, note), each priced for one day at
the tier it is in when the cost is computed (a report rebuilt after tiering prices what moved at the
colder rate).
"""

from dataclasses import dataclass
from importlib import resources

import polars as pl
import yaml

from diary_platform.domain.catalog import DIARY_NOTES, RAW_AUDIO, TRANSCRIPTS, VALIDATED_AUDIO
from diary_platform.domain.ingest.batches import batch_order
from diary_platform.domain.notes.spend import TokenUsage, call_cost
from diary_platform.domain.store.layout import DataStore

GB = 1024**3
DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class PlatformPrices:
    cpu_usd_per_second: float
    gpu_usd_per_second: float
    storage_usd_per_gb_month: dict[str, float]
    daily_budget_usd: float

    @classmethod
    def load(cls, text: str | None = None) -> "PlatformPrices":
        raw = yaml.safe_load(text or resources.files("diary_platform.config").joinpath("platform_prices.yaml").read_text())
        # float(): YAML 1.1 reads a number like 2e-05 (no decimal point) as a string.
        return cls(
            cpu_usd_per_second=float(raw["compute_usd_per_second"]["cpu"]),
            gpu_usd_per_second=float(raw["compute_usd_per_second"]["gpu"]),
            storage_usd_per_gb_month={tier: float(price) for tier, price in raw["storage_usd_per_gb_month"].items()},
            daily_budget_usd=float(raw["daily_budget_usd"]),
        )


def recording_costs(
    tables: dict[str, pl.DataFrame],
    stored_bytes: dict[str, dict[str, int]],
    prices: PlatformPrices,
    model_prices: dict,
    gpu: bool,
) -> pl.DataFrame:
    """What each recording cost so far: the one definition of cost that batches, days and `diary status` share.

    Compute is decode seconds at the CPU price plus transcription seconds at the worker's price (GPU when
    transcription ran on one); language models are what each note was booked at; storage is one day
    of the recording's files at the tier each is in. `tables`: the batch tables there are so far, by asset
    name; `stored_bytes`: bytes per recording id, per tier."""
    empty = pl.DataFrame()
    validated, transcripts, notes = (tables.get(name, empty) for name in (VALIDATED_AUDIO, TRANSCRIPTS, DIARY_NOTES))
    rows: dict[tuple, dict] = {}  # by (batch, recording): a re-driven recording costs again in its new batch
    for frame in tables.values():
        for row in frame.iter_rows(named=True) if frame.height else []:
            rows.setdefault(_key(row), {**_ZERO, "batch_key": row.get("batch_key"), "recording_id": row["recording_id"], "user": row["user"]})
    for row in validated.iter_rows(named=True) if validated.height else []:
        decoded = row.get("decode_seconds") or 0.0
        rows[_key(row)].update(compute_seconds=decoded, compute_usd=decoded * prices.cpu_usd_per_second)
    transcribe_price = prices.gpu_usd_per_second if gpu else prices.cpu_usd_per_second
    for row in transcripts.iter_rows(named=True) if transcripts.height else []:
        recording = rows[_key(row)]
        seconds = row.get("processing_seconds") or 0.0
        recording["audio_seconds"] = row.get("audio_seconds") or 0.0
        recording["compute_seconds"] += seconds
        recording["compute_usd"] += seconds * transcribe_price
    for row in notes.iter_rows(named=True) if notes.height else []:
        rows[_key(row)].update(
            llm_input_tokens=row.get("input_tokens") or 0,
            llm_cached_input_tokens=row.get("cached_input_tokens") or 0,
            llm_output_tokens=row.get("output_tokens") or 0,
            llm_usd=_booked_or_priced(row, model_prices),
            llm_saved_usd=row.get("saved_usd") or 0.0,
        )
    newest = {}  # a recording's files are stored once, whatever number of batches it went through: its newest row pays
    for key in sorted(rows, key=lambda k: batch_order(k[0]) if k[0] else ""):
        newest[key[1]] = key
    for recording_id, key in newest.items():
        by_tier = stored_bytes.get(recording_id, {})
        rows[key]["storage_bytes"] = sum(by_tier.values())
        rows[key]["storage_usd"] = sum(size / GB * prices.storage_usd_per_gb_month[tier] / DAYS_PER_MONTH for tier, size in by_tier.items())
    costs = pl.DataFrame(list(rows.values()), schema=_RECORDING_SCHEMA) if rows else pl.DataFrame(schema=_RECORDING_SCHEMA)
    return costs.with_columns(total_usd=pl.col("compute_usd") + pl.col("llm_usd") + pl.col("storage_usd"))


def _booked_or_priced(row: dict, model_prices: dict) -> float:
    """What the note's calls were booked at (batch and cached rates included); tables written before notes
    recorded their cost are priced from their tokens at list prices."""
    if row.get("cost_usd") is not None:
        return row["cost_usd"]
    return call_cost(model_prices, row.get("model") or "", TokenUsage(row.get("input_tokens") or 0, row.get("output_tokens") or 0))


def _key(row: dict) -> tuple:
    return row.get("batch_key"), row["recording_id"]


def stored_bytes(tables: dict[str, pl.DataFrame], store: DataStore) -> dict[str, dict[str, int]]:
    """Bytes of every file the recordings of `tables` (by asset name) added, per recording and the tier each file is in now."""
    totals: dict[str, dict[str, int]] = {}
    for asset, columns in URI_COLUMNS.items():
        frame = tables.get(asset, pl.DataFrame())
        for row in frame.iter_rows(named=True) if frame.height else []:
            for column in columns:
                found = store.find_uri(row[column]) if row.get(column) else None
                if found is not None:
                    by_tier = totals.setdefault(row["recording_id"], {})
                    by_tier[found.tier] = by_tier.get(found.tier, 0) + found.size
    return totals


def cost_report(costs: pl.DataFrame) -> pl.DataFrame:
    """One row per user, plus a `(total)` row, summing `recording_costs`; and the cost per audio hour."""
    sums = [pl.col(c).sum() for c in _SUMMED]
    report = costs.group_by("user").agg(pl.len().cast(pl.Int64).alias("recordings"), *sums).sort("user")
    totals = report.select(pl.lit(TOTAL).alias("user"), *(pl.col(c).sum() for c in report.columns if c != "user"))
    report = pl.concat([report, totals]).with_columns(audio_hours=pl.col("audio_seconds") / 3600).drop("audio_seconds")
    report = report.with_columns(
        usd_per_audio_hour=pl.when(pl.col("audio_hours") > 0).then(pl.col("total_usd") / pl.col("audio_hours")).otherwise(None)
    )
    return report.select("user", "recordings", "audio_hours", *_SUMMED[1:], "usd_per_audio_hour")


TOTAL = "(total)"
URI_COLUMNS = {
    RAW_AUDIO: ["original_uri"],
    VALIDATED_AUDIO: ["normalised_uri"],
    TRANSCRIPTS: ["txt_uri", "srt_uri", "vtt_uri", "json_uri"],
    DIARY_NOTES: ["note_uri"],
}
_RECORDING_SCHEMA = {
    "batch_key": pl.Utf8,
    "recording_id": pl.Utf8,
    "user": pl.Utf8,
    "audio_seconds": pl.Float64,
    "compute_seconds": pl.Float64,
    "compute_usd": pl.Float64,
    "llm_input_tokens": pl.Int64,
    "llm_cached_input_tokens": pl.Int64,
    "llm_output_tokens": pl.Int64,
    "llm_usd": pl.Float64,
    "llm_saved_usd": pl.Float64,
    "storage_bytes": pl.Int64,
    "storage_usd": pl.Float64,
}
_ZERO = {name: 0 if dtype == pl.Int64 else 0.0 for name, dtype in _RECORDING_SCHEMA.items() if dtype != pl.Utf8}
_SUMMED = [*_ZERO, "total_usd"]
