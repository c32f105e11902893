"""What every batch asset shares: its partitioning and group, its step span, the metadata it reports, its schema check."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandera.polars as pa
import polars as pl
from opentelemetry import context as otel_context
from pandera.errors import SchemaErrors

from diary_platform import metadata, telemetry
from diary_platform.domain import catalog, instruments
from diary_platform.domain.schemas import STATUS_QUARANTINED
from diary_platform.domain.status import recordings_view
from diary_platform.domain.store.objects import NoSpaceLeft
from diary_platform.k8s import step_tags
from diary_platform.partitions import batch_partitions
from diary_platform.resources import PlatformPricing, StoreResource
from diary_platform.retries import NETWORK_RETRY
from diary_platform.settings import Settings


def batch_asset(settings: Settings, name: str, **kwargs):
    """An asset over the `batches` partitions whose value is a polars table stored as Parquet."""
    return dg.asset(
        name=name,
        partitions_def=batch_partitions,
        group_name="diary",
        kinds={"polars", "parquet"},
        retry_policy=NETWORK_RETRY,
        op_tags=step_tags(settings, name),
        **kwargs,
    )


@contextmanager
def step_span(context: dg.AssetExecutionContext) -> Iterator[None]:
    """The span of one batch step, child of the sensor tick that requested the run when there was one.

    A full disk fails the step at once (retrying cannot help) and quarantines nothing: the batch stays
    resumable for when there is space again."""
    telemetry.configure()
    parent = telemetry.step_context(context.run.run_id, context.partition_key, context.run.tags)
    token = otel_context.attach(parent)
    try:
        with instruments.current().tracer.start_as_current_span(f"{context.asset_key.to_user_string()} step"):
            yield
    except NoSpaceLeft as full:
        raise dg.Failure(
            description=f"{full.strerror}: free some space, then resume the batch (nothing was quarantined)", allow_retries=False
        ) from full
    finally:
        otel_context.detach(token)


def batch_metadata(table: pl.DataFrame, wall_seconds: float, audio_column: str | None = None) -> dict:
    quarantined = table.filter(pl.col("status") == STATUS_QUARANTINED)
    values: dict = {
        "dagster/row_count": table.height,
        "recordings": table.height,
        "failures": quarantined.height,
        "processing_seconds": round(wall_seconds, 3),
    }
    if audio_column:
        audio_seconds = float(table[audio_column].fill_null(0).sum())
        values["audio_seconds"] = round(audio_seconds, 3)
        values["speed"] = round(audio_seconds / wall_seconds, 2) if wall_seconds > 0 else 0.0
    if quarantined.height:
        reasons = quarantined.group_by("reason").len().sort("reason")
        values["failure_reasons"] = {row["reason"]: row["len"] for row in reasons.iter_rows(named=True)}
    return values


def recordings_metadata(
    context: dg.AssetExecutionContext, store: StoreResource, pricing: PlatformPricing, name: str, table: pl.DataFrame
) -> dict:
    """The batch's recordings one per row, as far as this step (`name`, its output `table`): what an operator
    looks at first when a batch has failures. Plus the batch's cost so far, and per audio hour."""
    earlier = catalog.BATCH_TABLES[: catalog.BATCH_TABLES.index(name)]
    tables = {**{n: store.catalog.batch(n, context.partition_key) for n in earlier}, name: table}
    costs = pricing.costs(tables, store.store)
    cost_usd = float(costs["total_usd"].sum())
    audio_hours = float(costs["audio_seconds"].sum()) / 3600
    view = recordings_view(tables, costs).with_columns(
        pl.col("audio_seconds", "processing_seconds").round(3), pl.col("speed").round(2), pl.col("cost_usd").round(9)
    )
    values = {"per_recording": metadata.table(view), "cost_usd": round(cost_usd, 9)}
    if audio_hours:
        values["usd_per_audio_hour"] = round(cost_usd / audio_hours, 6)
    return values


def schema_check(asset_name: str, schema: pa.DataFrameSchema) -> dg.AssetChecksDefinition:
    """A blocking ERROR check that re-validates the stored table, so nothing downstream reads a broken one."""

    @dg.asset_check(
        asset=asset_name,
        name="schema",
        partitions_def=batch_partitions,
        blocking=True,
        description=f"The stored {asset_name} table meets its pandera contract.",
    )
    def check(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
        stored = store.catalog.batch(asset_name, context.partition_key)
        try:
            schema.validate(stored, lazy=True)
        except SchemaErrors as errors:
            cases = errors.failure_cases
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"failures": cases.height, "first_failures": metadata.table(cases.head(10))},
            )
        return dg.AssetCheckResult(passed=True, metadata={"rows": stored.height})

    return check
