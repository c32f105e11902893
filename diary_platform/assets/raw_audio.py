import time

import dagster as dg
import polars as pl

from diary_platform.assets.batch_asset import batch_asset, batch_metadata, step_span, schema_check
from diary_platform.domain import stages
from diary_platform.domain.schemas import RAW_AUDIO
from diary_platform.resources import DiaryStorage
from diary_platform.k8s import step_tags


@batch_asset(
    op_tags=step_tags("raw_audio"),
    code_version="1",
    description="Uploads of one ingest batch, copied into content-addressed storage (landing files stay untouched).",
)
def raw_audio(context: dg.AssetExecutionContext, storage: DiaryStorage) -> pl.DataFrame:
    started = time.perf_counter()
    with step_span(context):
        table = stages.ingest(storage.batches.read(context.partition_key), storage.store)
    context.add_output_metadata(batch_metadata(table, time.perf_counter() - started))
    return table


raw_audio_schema = schema_check("raw_audio", RAW_AUDIO)
