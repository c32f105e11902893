import time

import dagster as dg
import polars as pl

from diary_platform.batch.asset import batch_asset, batch_metadata, recordings_metadata, schema_check, step_span
from diary_platform.domain import catalog, schemas, stages
from diary_platform.domain.schemas import STATUS_OK
from diary_platform.resources import NoteWriterResource, PlatformPricing, StoreResource
from diary_platform.settings import Settings

PREVIEW_NOTES = 5


def diary_notes_asset(settings: Settings) -> dg.AssetsDefinition:
    @batch_asset(
        settings,
        catalog.DIARY_NOTES,
        pool="llm",
        code_version="1",
        description="A structured diary note per recording (title, summary, events, people, places, to-dos, mood).",
    )
    def diary_notes(
        context: dg.AssetExecutionContext,
        transcripts: pl.DataFrame,
        store: StoreResource,
        note_writer: NoteWriterResource,
        pricing: PlatformPricing,
    ) -> pl.DataFrame:
        started = time.perf_counter()
        with step_span(context):
            table = stages.write_notes(transcripts, note_writer.build(), store.store)
        written = table.filter(pl.col("status") == STATUS_OK)
        preview = "\n\n---\n\n".join(written["markdown"].head(PREVIEW_NOTES).to_list()) or "*No notes in this batch.*"
        context.add_output_metadata(
            {
                **batch_metadata(table, time.perf_counter() - started),
                "llm_usd": round(float(table["cost_usd"].sum()), 6),
                **recordings_metadata(context, store, pricing, catalog.DIARY_NOTES, table),
                "preview": dg.MetadataValue.md(preview),
            }
        )
        return table

    return diary_notes


diary_notes_schema = schema_check(catalog.DIARY_NOTES, schemas.DIARY_NOTES)
