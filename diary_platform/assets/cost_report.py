import dagster as dg
import polars as pl

from diary_platform.domain.ingest.batches import batch_time
from diary_platform.domain.costs import cost_report as build_cost_report, to_markdown
from diary_platform.domain.notes.spend import load_prices
from diary_platform.assets.batch_asset import NETWORK_RETRY
from diary_platform.partitions import daily_partitions
from diary_platform.resources import DiaryStorage, PlatformPricing, WhisperTranscriber
from diary_platform.k8s import step_tags

URI_COLUMNS = {
    "validated_audio": ["original_uri", "normalised_uri"],
    "transcripts": ["txt_uri", "srt_uri", "vtt_uri", "json_uri"],
    "diary_notes": ["note_uri"],
}


def _tables_of_day(storage: DiaryStorage, asset: str, day) -> pl.DataFrame:
    store = storage.store
    keys = [key for key in store.table_partitions(asset) if batch_time(key).date() == day]
    frames = [store.read_table(asset, key) for key in keys]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _stored_bytes(storage: DiaryStorage, tables: dict[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
    """Bytes of every file the day's recordings added, per user and the tier each file is in now."""
    totals: dict[str, dict[str, int]] = {}
    store = storage.store
    for asset, columns in URI_COLUMNS.items():
        frame = tables[asset]
        for row in frame.iter_rows(named=True) if frame.height else []:
            for column in columns:
                if row.get(column):
                    found = store.find_uri(row[column])
                    if found is not None:
                        by_tier = totals.setdefault(row["user"], {})
                        by_tier[found.tier] = by_tier.get(found.tier, 0) + found.size
    return totals


@dg.asset(
    op_tags=step_tags("cost_report"),
    partitions_def=daily_partitions,
    group_name="operations",
    kinds={"polars", "parquet"},
    retry_policy=NETWORK_RETRY,
    code_version="2",
    deps=[
        dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping())
        for name in ("validated_audio", "transcripts", "diary_notes")
    ],
    description="What each day's processing cost per user: compute, language models, storage; per audio hour.",
)
def cost_report(
    context: dg.AssetExecutionContext, storage: DiaryStorage, whisper: WhisperTranscriber, pricing: PlatformPricing
) -> pl.DataFrame:
    day = context.partition_time_window.start.date()
    tables = {asset: _tables_of_day(storage, asset, day) for asset in URI_COLUMNS}
    report = build_cost_report(
        tables["validated_audio"],
        tables["transcripts"],
        tables["diary_notes"],
        _stored_bytes(storage, tables),
        pricing.prices(),
        load_prices(),
        gpu=whisper.device.startswith("cuda"),
    )
    total = report.filter(pl.col("user") == "(total)").row(0, named=True)
    context.add_output_metadata(
        {
            "dagster/row_count": report.height,
            "total_usd": round(total["total_usd"], 6),
            "compute_usd": round(total["compute_usd"], 6),
            "llm_usd": round(total["llm_usd"], 6),
            "storage_usd": round(total["storage_usd"], 6),
            "audio_hours": round(total["audio_hours"], 6),
            "usd_per_audio_hour": round(total["usd_per_audio_hour"] or 0.0, 6),
            "report": dg.MetadataValue.md(to_markdown(report)),
        }
    )
    return report


@dg.asset_check(
    asset=cost_report,
    partitions_def=daily_partitions,
    description="The day's total stays within the daily budget (config/platform_prices.yaml or DIARY_PLATFORM_PRICES).",
)
def within_daily_budget(
    context: dg.AssetCheckExecutionContext, storage: DiaryStorage, pricing: PlatformPricing
) -> dg.AssetCheckResult:
    report = storage.store.read_table("cost_report", context.partition_key)
    total = float(report.filter(pl.col("user") == "(total)")["total_usd"].sum())
    budget = pricing.prices().daily_budget_usd
    return dg.AssetCheckResult(
        passed=total <= budget,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"total_usd": round(total, 6), "budget_usd": budget},
    )


