import time

import dagster as dg
import polars as pl

from diary_platform.assets.batch_asset import batch_asset, batch_metadata
from diary_platform.domain import stages
from diary_platform.resources import AudioLimits, DiaryStorage


@batch_asset(
    code_version="1",
    description="Each recording decoded once to 16 kHz mono; undecodable or empty uploads are quarantined with a reason.",
)
def validated_audio(
    context: dg.AssetExecutionContext, raw_audio: pl.DataFrame, storage: DiaryStorage, audio_limits: AudioLimits
) -> pl.DataFrame:
    started = time.perf_counter()
    table = stages.validate(raw_audio, storage.store, audio_limits.max_audio_seconds)
    context.add_output_metadata(batch_metadata(table, time.perf_counter() - started, "duration_seconds"))
    return table
