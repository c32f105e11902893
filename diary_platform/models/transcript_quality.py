"""`transcript_quality`: each day's transcription compared with the week before (domain/models/drift.py), with
a WARN check on drifted distributions and an ERROR check on quarantine or guard-drop jumps."""

from datetime import date, timedelta

import dagster as dg
import polars as pl

from diary_platform import metadata
from diary_platform.domain import catalog
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.models.drift import (
    EVERY_GROUP,
    GUARD_DROP_SHARE,
    QUARANTINE_SHARE,
    REFERENCE_DAYS,
    TRANSCRIPT_QUALITY,
    Window,
    ab_comparison,
    baseline_group,
    guard_drop_share,
    quality_report,
    recording_measures,
)
from diary_platform.k8s import step_tags
from diary_platform.partitions import daily_partitions
from diary_platform.resources import StoreResource
from diary_platform.retries import NETWORK_RETRY
from diary_platform.settings import Settings

SOURCES = (catalog.TRANSCRIPTS, catalog.VALIDATED_AUDIO)


def _window(tables: Catalog, first: date, last: date) -> Window:
    return Window(
        transcripts=tables.created_between(catalog.TRANSCRIPTS, first, last),
        validated=tables.created_between(catalog.VALIDATED_AUDIO, first, last),
    )


def _label(row: dict) -> str:
    """`tiny.en (3f2a…, arm all): avg_logprob`; a day-wide row is its metric alone."""
    if row["arm"] == EVERY_GROUP:
        return row["metric"]
    return f"{row['model']} ({row['transcriber_version']}, arm {row['arm']}): {row['metric']}"


def _numbers(report: pl.DataFrame, measures: pl.DataFrame, ab: pl.DataFrame) -> dict[str, float]:
    """The figures the UI plots across days; a figure the day could not measure is left out, not zero."""
    numbers: dict[str, float] = {}
    psis = report["psi"].drop_nulls()
    if psis.len():
        numbers["max_psi"] = psis.max()
    if (group := baseline_group(measures)) is not None:
        version, arm = group
        rows = report.filter((pl.col("transcriber_version") == version) & (pl.col("arm") == arm) & pl.col("psi").is_not_null())
        numbers |= {f"psi/{row['metric']}": row["psi"] for row in rows.iter_rows(named=True)}
    quarantine = report.filter((pl.col("metric") == QUARANTINE_SHARE) & (pl.col("arm") == EVERY_GROUP))["mean"].drop_nulls()
    if quarantine.len():
        numbers[QUARANTINE_SHARE] = quarantine[0]
    if (drops := guard_drop_share(measures)) is not None:
        numbers[GUARD_DROP_SHARE] = drops
    for row in ab.filter(pl.col("metric") == "avg_logprob").iter_rows(named=True):
        numbers |= {"ab/logprob_delta": row["delta"], "ab/logprob_ci_low": row["ci_low"], "ab/logprob_ci_high": row["ci_high"]}
    return {name: round(float(value), 6) for name, value in numbers.items()}


def transcript_quality_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=TRANSCRIPT_QUALITY,
        op_tags=step_tags(settings, TRANSCRIPT_QUALITY),
        partitions_def=daily_partitions,
        group_name="models",
        kinds={"polars", "parquet"},
        retry_policy=NETWORK_RETRY,
        code_version="1",
        deps=[dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping()) for name in SOURCES],
        description=(
            "Whether the day's transcription still looks like the previous week's, per model version and arm: "
            "population stability index of log-probability, no-speech probability, compression ratio, guard drops, "
            "words per second, SNR, speech ratio, speed and language mix; jumps of the quarantine and guard-drop "
            "shares; candidate minus baseline arm with 95 % intervals."
        ),
    )
    def transcript_quality(context: dg.AssetExecutionContext, store: StoreResource) -> pl.DataFrame:
        day = context.partition_time_window.start.date()
        today = _window(store.catalog, day, day)
        reference = _window(store.catalog, day - timedelta(days=REFERENCE_DAYS), day - timedelta(days=1))
        report = quality_report(today, reference)
        measures = recording_measures(today)
        ab = ab_comparison(measures)
        context.add_output_metadata(
            {
                "dagster/row_count": report.height,
                **_numbers(report, measures, ab),
                "report": metadata.table(report, rounding=4),
                **({"ab": metadata.table(ab, rounding=4)} if not ab.is_empty() else {}),
            }
        )
        return report

    return transcript_quality


@dg.asset_check(
    asset=TRANSCRIPT_QUALITY,
    partitions_def=daily_partitions,
    description=(
        "No metric of any model version and arm has drifted from the previous week: PSI above 0.25 and above the "
        "sampling noise of the day's and the week's sample sizes (groups under 20 recordings are not judged)."
    ),
)
def quality_drift(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    report = store.catalog.batch(TRANSCRIPT_QUALITY, context.partition_key)
    drifted = report.filter(pl.col("drifted")).sort("psi", descending=True)
    psis = report["psi"].drop_nulls()
    return dg.AssetCheckResult(
        passed=drifted.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "drifted": "; ".join(f"{_label(row)} psi {row['psi']:.2f}" for row in drifted.iter_rows(named=True)) or "none",
            "drifted_metrics": drifted.height,
            "max_psi": round(float(psis.max()), 6) if psis.len() else None,
        },
    )


@dg.asset_check(
    asset=TRANSCRIPT_QUALITY,
    partitions_def=daily_partitions,
    blocking=False,
    description=(
        "The share of recordings quarantined (overall or for one reason) and of segments the guards dropped did not "
        "jump: an alarm is a rise of more than 0.10 over the previous week that at least doubles the share."
    ),
)
def quarantine_or_guard_jump(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    report = store.catalog.batch(TRANSCRIPT_QUALITY, context.partition_key)
    alarms = report.filter(pl.col("alarm"))
    return dg.AssetCheckResult(
        passed=alarms.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "alarms": "; ".join(
                f"{_label(row)} {row['reference_mean']:.3f} → {row['mean']:.3f}" for row in alarms.iter_rows(named=True)
            )
            or "none",
        },
    )


def transcript_quality_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=[transcript_quality_asset(settings)], asset_checks=[quality_drift, quarantine_or_guard_jump])
