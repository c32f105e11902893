import dagster as dg
import polars as pl

from diary_platform import metadata
from diary_platform.domain import catalog
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.costs import cost_report as build_cost_report
from diary_platform.domain.notes.spend import load_prices
from diary_platform.k8s import step_tags
from diary_platform.partitions import daily_partitions
from diary_platform.resources import PlatformPricing, StoreResource, WhisperTranscriber
from diary_platform.retries import NETWORK_RETRY
from diary_platform.settings import Settings

URI_COLUMNS = {
    catalog.VALIDATED_AUDIO: ["original_uri", "normalised_uri"],
    catalog.TRANSCRIPTS: ["txt_uri", "srt_uri", "vtt_uri", "json_uri"],
    catalog.DIARY_NOTES: ["note_uri"],
}
TOTAL = "(total)"


def _stored_bytes(tables: dict[str, pl.DataFrame], catalog_: Catalog) -> dict[str, dict[str, int]]:
    """Bytes of every file the day's recordings added, per user and the tier each file is in now."""
    totals: dict[str, dict[str, int]] = {}
    for asset, columns in URI_COLUMNS.items():
        frame = tables[asset]
        for row in frame.iter_rows(named=True) if frame.height else []:
            for column in columns:
                found = catalog_.store.find_uri(row[column]) if row.get(column) else None
                if found is not None:
                    by_tier = totals.setdefault(row["user"], {})
                    by_tier[found.tier] = by_tier.get(found.tier, 0) + found.size
    return totals


def cost_report_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=catalog.COST_REPORT,
        op_tags=step_tags(settings, catalog.COST_REPORT),
        partitions_def=daily_partitions,
        group_name="operations",
        kinds={"polars", "parquet"},
        retry_policy=NETWORK_RETRY,
        code_version="2",
        deps=[dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping()) for name in URI_COLUMNS],
        description="What each day's processing cost per user: compute, language models, storage; per audio hour.",
    )
    def cost_report(
        context: dg.AssetExecutionContext, store: StoreResource, whisper: WhisperTranscriber, pricing: PlatformPricing
    ) -> pl.DataFrame:
        day = context.partition_time_window.start.date()
        tables = {asset: store.catalog.of_day(asset, day) for asset in URI_COLUMNS}
        report = build_cost_report(
            tables[catalog.VALIDATED_AUDIO],
            tables[catalog.TRANSCRIPTS],
            tables[catalog.DIARY_NOTES],
            _stored_bytes(tables, store.catalog),
            pricing.prices(),
            load_prices(),
            gpu=whisper.device.startswith("cuda"),
        )
        total = report.filter(pl.col("user") == TOTAL).row(0, named=True)
        context.add_output_metadata(
            {
                "dagster/row_count": report.height,
                **{
                    name: round(total[name] or 0.0, 6)
                    for name in ("total_usd", "compute_usd", "llm_usd", "storage_usd", "audio_hours", "usd_per_audio_hour")
                },
                "report": metadata.table(report, rounding=6),
            }
        )
        return report

    return cost_report


@dg.asset_check(
    asset=catalog.COST_REPORT,
    partitions_def=daily_partitions,
    description="The day's total stays within the daily budget (config/platform_prices.yaml or DIARY_PLATFORM_PRICES).",
)
def within_daily_budget(
    context: dg.AssetCheckExecutionContext, store: StoreResource, pricing: PlatformPricing
) -> dg.AssetCheckResult:
    report = store.catalog.batch(catalog.COST_REPORT, context.partition_key)
    total = float(report.filter(pl.col("user") == TOTAL)["total_usd"].sum())
    budget = pricing.prices().daily_budget_usd
    return dg.AssetCheckResult(
        passed=total <= budget,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"total_usd": round(total, 6), "budget_usd": budget},
    )
