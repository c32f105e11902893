import time

import dagster as dg
import polars as pl

from diary_platform.assets.batch_asset import batch_asset, batch_metadata
from diary_platform.domain import stages
from diary_platform.resources import DecodeLimits, DiaryStorage


@batch_asset(
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
    with decode_limits.sandbox() as sandbox:
        table = stages.validate(raw_audio, storage.store, sandbox)
    context.add_output_metadata(batch_metadata(table, time.perf_counter() - started, "duration_seconds"))
    return table
