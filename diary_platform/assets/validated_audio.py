import time

MAX_QUARANTINE_SHARE = 0.25

import dagster as dg
import polars as pl

from diary_platform.assets.batch_asset import batch_asset, batch_metadata, step_span, schema_check, stored_table
from diary_platform.domain import stages
from diary_platform.domain.schemas import STATUS_QUARANTINED, VALIDATED_AUDIO
from diary_platform.partitions import batch_partitions
from diary_platform.resources import DecodeLimits, DiaryStorage
from diary_platform.k8s import step_tags


@batch_asset(
    op_tags=step_tags("validated_audio"),
    code_version="1",
    description=(
        "Each recording decoded once, in a sandboxed child process, to 16 kHz mono and measured "
        "(levels, clipping, silence, speech, SNR, quality); what breaks a limit is quarantined with a reason."
    ),
)
def validated_audio(
    context: dg.AssetExecutionContext, raw_audio: pl.DataFrame, storage: DiaryStorage, decode_limits: DecodeLimits
) -> pl.DataFrame:
    started = time.perf_counter()
    with step_span(context), decode_limits.sandboxes() as sandboxes:
        table = stages.validate(raw_audio, storage.store, sandboxes)
    context.add_output_metadata(batch_metadata(table, time.perf_counter() - started, "duration_seconds"))
    return table


validated_audio_schema = schema_check("validated_audio", VALIDATED_AUDIO)


@dg.asset_check(
    asset="validated_audio",
    partitions_def=batch_partitions,
    description=f"At most {MAX_QUARANTINE_SHARE:.0%} of a batch quarantined; more means a person should look.",
)
def quarantine_share(context: dg.AssetCheckExecutionContext, storage: DiaryStorage) -> dg.AssetCheckResult:
    table = stored_table(storage, "validated_audio", context.partition_key)
    quarantined = table.filter(pl.col("status") == STATUS_QUARANTINED)
    share = quarantined.height / table.height if table.height else 0.0
    return dg.AssetCheckResult(
        passed=share <= MAX_QUARANTINE_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"share": round(share, 3), "quarantined": quarantined.height, "recordings": table.height},
    )
