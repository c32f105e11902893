"""What a day of processing cost, per user: compute, language models and storage, per audio hour.

Inputs are the tables of the batches processed that day. Compute is the measured decode and
transcription seconds times the worker price (GPU when transcription ran on one); language-model
cost is tokens times each model's list price; storage is the bytes the day's recordings added
(originals, normalised audio, transcript files, notes), each priced for one day at the tier it is in
when the report is made (a report rebuilt after tiering prices what moved at the colder rate).
"""

from dataclasses import dataclass
from importlib import resources

import polars as pl
import yaml

from diary_platform.domain.notes.spend import call_cost

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
        return cls(
            cpu_usd_per_second=raw["compute_usd_per_second"]["cpu"],
            gpu_usd_per_second=raw["compute_usd_per_second"]["gpu"],
            storage_usd_per_gb_month=raw["storage_usd_per_gb_month"],
            daily_budget_usd=raw["daily_budget_usd"],
        )


def cost_report(
    validated: pl.DataFrame,
    transcripts: pl.DataFrame,
    notes: pl.DataFrame,
    stored_bytes: dict[str, dict[str, int]],
    prices: PlatformPrices,
    model_prices: dict,
    gpu: bool,
) -> pl.DataFrame:
    """One row per user, plus a `(total)` row. `stored_bytes`: bytes added per user, per tier."""
    compute_price = prices.gpu_usd_per_second if gpu else prices.cpu_usd_per_second
    tables = (validated, transcripts, notes)
    users = sorted({u for t in tables if t.height for u in t["user"]} | set(stored_bytes))
    rows = []
    for user in users:
        decoded, audio, written = (_of_user(t, user) for t in tables)
        compute_seconds = _sum(decoded, "decode_seconds") + _sum(audio, "processing_seconds")
        llm_usd = sum(
            call_cost(model_prices, row["model"] or "", row["input_tokens"], row["output_tokens"])
            for row in written.iter_rows(named=True)
        )
        rows.append(
            {
                "user": user,
                "recordings": audio.height,
                "audio_hours": _sum(audio, "audio_seconds") / 3600,
                "compute_seconds": compute_seconds,
                "compute_usd": compute_seconds * compute_price,
                "llm_input_tokens": int(_sum(written, "input_tokens")),
                "llm_output_tokens": int(_sum(written, "output_tokens")),
                "llm_usd": llm_usd,
                "storage_bytes": sum(stored_bytes.get(user, {}).values()),
                "storage_usd": sum(
                    size / GB * prices.storage_usd_per_gb_month[tier] / DAYS_PER_MONTH
                    for tier, size in stored_bytes.get(user, {}).items()
                ),
            }
        )
    report = pl.DataFrame(rows, schema=_SCHEMA) if rows else pl.DataFrame(schema=_SCHEMA)
    report = report.with_columns(total_usd=pl.col("compute_usd") + pl.col("llm_usd") + pl.col("storage_usd"))
    totals = report.select(
        pl.lit("(total)").alias("user"),
        *(pl.col(c).sum() for c in report.columns if c != "user"),
    )
    report = pl.concat([report, totals])
    return report.with_columns(
        usd_per_audio_hour=pl.when(pl.col("audio_hours") > 0)
        .then(pl.col("total_usd") / pl.col("audio_hours"))
        .otherwise(None)
    )


def _of_user(frame: pl.DataFrame, user: str) -> pl.DataFrame:
    return frame.filter(pl.col("user") == user) if frame.height else frame


def _sum(frame: pl.DataFrame, column: str) -> float:
    return float(frame[column].sum() or 0) if frame.height else 0.0


_SCHEMA = {
    "user": pl.Utf8,
    "recordings": pl.Int64,
    "audio_hours": pl.Float64,
    "compute_seconds": pl.Float64,
    "compute_usd": pl.Float64,
    "llm_input_tokens": pl.Int64,
    "llm_output_tokens": pl.Int64,
    "llm_usd": pl.Float64,
    "storage_bytes": pl.Int64,
    "storage_usd": pl.Float64,
}
