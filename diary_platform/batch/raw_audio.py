import time

import dagster as dg
import polars as pl

from diary_platform.batch.asset import batch_asset, batch_metadata, recordings_metadata, schema_check, step_span
from diary_platform.domain import catalog, schemas, stages
from diary_platform.resources import PlatformPricing, StoreResource
from diary_platform.settings import Settings


def raw_audio_asset(settings: Settings) -> dg.AssetsDefinition:
    @batch_asset(
        settings,
        catalog.RAW_AUDIO,
        code_version="1",
        description="Uploads of one ingest batch, copied into content-addressed storage (landing files stay untouched).",
    )
    def raw_audio(context: dg.AssetExecutionContext, store: StoreResource, pricing: PlatformPricing) -> pl.DataFrame:
        started = time.perf_counter()
        try:
            manifest = store.batches.read(context.partition_key)
        except FileNotFoundError as missing:
            raise dg.Failure(description=str(missing), allow_retries=False) from None
        with step_span(context):
            table = stages.ingest(manifest, store.store)
        context.add_output_metadata(
            {
                **batch_metadata(table, time.perf_counter() - started),
                **recordings_metadata(context, store, pricing, catalog.RAW_AUDIO, table),
            }
        )
        return table

    return raw_audio


raw_audio_schema = schema_check(catalog.RAW_AUDIO, schemas.RAW_AUDIO)
