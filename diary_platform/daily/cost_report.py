import dagster as dg
import polars as pl

from diary_platform import metadata
from diary_platform.domain import catalog, instruments
from diary_platform.domain.costs import TOTAL, URI_COLUMNS
from diary_platform.domain.costs import cost_report as build_cost_report
from diary_platform.k8s import step_tags
from diary_platform.partitions import daily_partitions
from diary_platform.resources import NoteWriterResource, PlatformPricing, StoreResource
from diary_platform.retries import NETWORK_RETRY
from diary_platform.settings import Settings


def cost_report_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=catalog.COST_REPORT,
        op_tags=step_tags(settings, catalog.COST_REPORT),
        partitions_def=daily_partitions,
        group_name="operations",
        kinds={"polars", "parquet"},
        retry_policy=NETWORK_RETRY,
        code_version="3",
        deps=[dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping()) for name in URI_COLUMNS],
        description=(
            "What each day's processing cost per user: compute, language models, storage; per audio hour; and what the "
            "batch APIs and prompt caching saved on note writing against list prices."
        ),
    )
    def cost_report(
        context: dg.AssetExecutionContext, store: StoreResource, pricing: PlatformPricing
    ) -> pl.DataFrame:
        day = context.partition_time_window.start.date()
        tables = {asset: store.catalog.of_day(asset, day) for asset in URI_COLUMNS}
        report = build_cost_report(pricing.costs(tables, store.store))
        total = report.filter(pl.col("user") == TOTAL).row(0, named=True)
        context.add_output_metadata(
            {
                "dagster/row_count": report.height,
                **{
                    name: round(total[name] or 0.0, 6)
                    for name in ("total_usd", "compute_usd", "llm_usd", "llm_saved_usd", "storage_usd", "audio_hours", "usd_per_audio_hour")
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


@dg.asset_check(
    asset=catalog.COST_REPORT,
    partitions_def=daily_partitions,
    description=(
        "Early warning before the cut-over: the day has used less than the warning share (80 %) of the platform's "
        "daily budget, and no user that share of their daily note-writing budget (the LLM configuration's)."
    ),
)
def budget_warning(
    context: dg.AssetCheckExecutionContext, store: StoreResource, pricing: PlatformPricing, note_writer: NoteWriterResource
) -> dg.AssetCheckResult:
    report = store.catalog.batch(catalog.COST_REPORT, context.partition_key)
    limits = note_writer.router_config()
    share = limits.budget_warning_share
    total = float(report.filter(pl.col("user") == TOTAL)["total_usd"].sum())
    platform_budget = pricing.prices().daily_budget_usd
    user_budget = limits.budget_usd_per_user_per_day
    users = report.filter((pl.col("user") != TOTAL) & (pl.col("llm_usd") >= share * user_budget)) if user_budget > 0 else report.clear()
    platform_near = total >= share * platform_budget
    if platform_near:  # users' alerts come from the router, once per crossing
        level = "exhausted" if total >= platform_budget else "warning"
        instruments.current().budget_alerts.add(1, {"scope": "platform", "level": level})
    return dg.AssetCheckResult(
        passed=not platform_near and not users.height,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "total_usd": round(total, 6),
            "platform_share": round(total / platform_budget, 4) if platform_budget else None,
            "warning_share": share,
            "users_near_their_budget": ", ".join(users["user"].to_list()) or "none",
        },
    )
