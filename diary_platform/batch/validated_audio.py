import time
from urllib.parse import quote

import dagster as dg
import polars as pl

from diary_platform import metadata
from diary_platform.batch.asset import batch_asset, batch_metadata, recordings_metadata, schema_check, step_span
from diary_platform.domain import catalog, schemas, stages
from diary_platform.domain.schemas import STATUS_QUARANTINED
from diary_platform.partitions import batch_partitions
from diary_platform.resources import DecodeLimits, PlatformPricing, StoreResource
from diary_platform.settings import Settings

MAX_QUARANTINE_SHARE = 0.25


def validated_audio_asset(settings: Settings) -> dg.AssetsDefinition:
    @batch_asset(
        settings,
        catalog.VALIDATED_AUDIO,
        code_version="1",
        description=(
            "Each recording decoded once, in a sandboxed child process, to 16 kHz mono and measured "
            "(levels, clipping, silence, speech, SNR, quality); what breaks a limit is quarantined with a reason."
        ),
    )
    def validated_audio(
        context: dg.AssetExecutionContext,
        raw_audio: pl.DataFrame,
        store: StoreResource,
        decode_limits: DecodeLimits,
        pricing: PlatformPricing,
    ) -> pl.DataFrame:
        started = time.perf_counter()
        with step_span(context), decode_limits.sandboxes() as sandboxes:
            table = stages.validate(raw_audio, store.store, sandboxes)
        quarantined = table.filter(pl.col("status") == STATUS_QUARANTINED).height
        context.add_output_metadata(
            {
                **batch_metadata(table, time.perf_counter() - started, "duration_seconds"),
                "quarantine_share": round(quarantined / table.height, 4) if table.height else 0.0,
                **recordings_metadata(context, store, pricing, catalog.VALIDATED_AUDIO, table),
            }
        )
        return table

    return validated_audio


validated_audio_schema = schema_check(catalog.VALIDATED_AUDIO, schemas.VALIDATED_AUDIO)


@dg.asset_check(
    asset=catalog.VALIDATED_AUDIO,
    partitions_def=batch_partitions,
    description=(
        f"At most {MAX_QUARANTINE_SHARE:.0%} of a batch quarantined; more means a person should look. Which "
        "recordings and why: `quarantined_recordings` here, and the `per_recording` table of the batch's validated_audio "
        "materialization (`batch_page` links to it)."
    ),
)
def quarantine_share(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    key = context.partition_key
    table = store.catalog.batch(catalog.VALIDATED_AUDIO, key)
    names = store.catalog.batch(catalog.RAW_AUDIO, key).select("recording_id", file="source_name")
    quarantined = table.filter(pl.col("status") == STATUS_QUARANTINED).join(names, on="recording_id", how="left")
    share = quarantined.height / table.height if table.height else 0.0
    return dg.AssetCheckResult(
        passed=share <= MAX_QUARANTINE_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "share": round(share, 3),
            "quarantined": quarantined.height,
            "recordings": table.height,
            "quarantined_recordings": metadata.table(quarantined.select("file", "user", "recording_id", "reason", "message")),
            "batch_page": dg.MetadataValue.url(f"/assets/{catalog.VALIDATED_AUDIO}?view=events&partition={quote(key)}"),
        },
    )
