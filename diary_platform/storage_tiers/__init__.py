"""The storage slice: where the platform's data is (hot, warm, cold), the nightly job that moves old data
to colder tiers and applies retention, and the policy resource it follows."""

from dataclasses import asdict
from datetime import datetime, timezone

import dagster as dg
import polars as pl
from pydantic import Field

from diary_platform import metadata
from diary_platform.domain import catalog
from diary_platform.domain.store.layout import asset_of
from diary_platform.domain.store.objects import GcsStore
from diary_platform.domain.store.tiering import TieringPolicy, apply_tiering, storage_report
from diary_platform.k8s import step_tags
from diary_platform.resources import StoreResource
from diary_platform.settings import Settings


class TieringConfig(dg.Config):
    as_of: str = Field(default="", description="ISO time to judge ages against (default: now), to rehearse a policy.")
    dry_run: bool = Field(default=False, description="Report what would move or be deleted, and change nothing.")


class TieringPolicyResource(dg.ConfigurableResource):
    """Ages (days since an object was written) at which objects go to warm and cold, and retention of originals."""

    warm_after_days: int
    cold_after_days: int
    delete_originals_after_days: int | None

    def policy(self) -> TieringPolicy:
        return TieringPolicy(**self.model_dump())


def storage_tiers_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=catalog.STORAGE_TIERS,
        op_tags=step_tags(settings, catalog.STORAGE_TIERS),
        group_name="operations",
        kinds={"polars", "parquet"},
        description=(
            "Objects and bytes per asset and storage tier. Materializing it first moves objects older than the "
            "policy's ages to colder tiers (local data folder; on GCS the bucket's lifecycle rules do that and "
            "this only records where data is) and applies retention of originals when configured."
        ),
    )
    def storage_tiers(
        context: dg.AssetExecutionContext, config: TieringConfig, store: StoreResource, tiering: TieringPolicyResource
    ) -> dg.MaterializeResult:
        now = datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(timezone.utc)
        data = store.store
        outcome = apply_tiering(data.objects, tiering.policy(), now, dry_run=config.dry_run)
        report = storage_report(outcome.objects)
        moved = pl.DataFrame(
            [{"asset": asset_of(m.key), "to": m.to_tier, "bytes": m.size} for m in outcome.moves],
            schema={"asset": pl.Utf8, "to": pl.Utf8, "bytes": pl.Int64},
        )
        for row in moved.group_by("asset", "to").agg(pl.len(), pl.col("bytes").sum()).sort("asset").iter_rows(named=True):
            context.log.info(f"{row['asset']}: {row['len']} objects ({row['bytes']:,} bytes) moved to {row['to']}")
        for deletion in outcome.deletions:
            context.log.warning(f"retention deleted {deletion.key} ({deletion.size} bytes, {deletion.reason})")
        written = data.write_table(catalog.STORAGE_TIERS, "latest", report)
        per_tier = report.group_by("tier").agg(pl.col("objects").sum(), pl.col("bytes").sum())
        values: dict = {
            "report": metadata.table(report),
            "moved_objects": len(outcome.moves),
            "moved_bytes": sum(m.size for m in outcome.moves),
            "deleted_originals": len(outcome.deletions),
            "dry_run": config.dry_run,
            "path": dg.MetadataValue.path(written.uri),
            **{f"{r['tier']}_bytes": int(r["bytes"]) for r in per_tier.iter_rows(named=True)},
            **{f"{r['tier']}_objects": int(r["objects"]) for r in per_tier.iter_rows(named=True)},
        }
        if outcome.record_key:
            values["retention_record"] = dg.MetadataValue.path(data.objects.uri(outcome.record_key))
        if isinstance(data.objects, GcsStore):
            values["lifecycle_rules"] = dg.MetadataValue.json([str(rule) for rule in data.objects.lifecycle_rules()])
        return dg.MaterializeResult(metadata=values)

    return storage_tiers


storage_job = dg.define_asset_job(
    "storage_job", selection=dg.AssetSelection.assets(catalog.STORAGE_TIERS), description="Tiering, retention, storage report."
)


@dg.schedule(
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    job=storage_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Moves old data to colder tiers and reports storage, nightly.",
)
def storage_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"storage-{context.scheduled_execution_time.date().isoformat()}")


def definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[storage_tiers_asset(settings)],
        jobs=[storage_job],
        schedules=[storage_schedule],
        resources={"tiering": TieringPolicyResource(**asdict(settings.tiering))},
    )
