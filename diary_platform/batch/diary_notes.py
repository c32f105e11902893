import time
from datetime import datetime, timezone

import dagster as dg
import polars as pl

from diary_platform.batch.asset import batch_asset, batch_metadata, recordings_metadata, schema_check, step_span
from diary_platform.batch.note_batches import COLLECT_TAG
from diary_platform.domain import catalog, schemas, stages
from diary_platform.domain.schemas import STATUS_OK, STATUS_PENDING
from diary_platform.resources import NoteWriterResource, PlatformPricing, StoreResource, WhisperTranscriber
from diary_platform.settings import Settings

PREVIEW_NOTES = 5


def diary_notes_asset(settings: Settings) -> dg.AssetsDefinition:
    @batch_asset(
        settings,
        catalog.DIARY_NOTES,
        pool="llm",
        code_version="2",
        description=(
            "A structured diary note per recording (title, summary, events, people, places, to-dos, mood); notes that may "
            "wait are `pending` in a provider batch until `note_batches_sensor` has them collected."
        ),
    )
    def diary_notes(
        context: dg.AssetExecutionContext,
        transcripts: pl.DataFrame,
        store: StoreResource,
        note_writer: NoteWriterResource,
        pricing: PlatformPricing,
        whisper: WhisperTranscriber,
    ) -> pl.DataFrame:
        started = time.perf_counter()
        collecting = COLLECT_TAG in context.run.tags and store.catalog.has(catalog.DIARY_NOTES, context.partition_key)
        previous = store.catalog.batch(catalog.DIARY_NOTES, context.partition_key) if collecting else None
        uploads = store.shared_state.api_uploads

        def template_of(row: dict) -> str | None:
            upload = uploads.get(row["user"], row["recording_id"])
            return upload.template if upload else None

        with step_span(context):
            routing = whisper.routing(store.shared_state.model_promotions, datetime.now(timezone.utc))
            table = stages.write_notes(transcripts, note_writer.build(), store.store, previous, template_of=template_of, routing=routing)
        written = table.filter(pl.col("status") == STATUS_OK)
        waiting = table.filter(pl.col("status") == STATUS_PENDING)
        preview = "\n\n---\n\n".join(written["markdown"].head(PREVIEW_NOTES).to_list()) or "*No notes in this batch.*"
        context.add_output_metadata(
            {
                **batch_metadata(table, time.perf_counter() - started),
                "llm_usd": round(float(table["cost_usd"].sum()), 6),
                "llm_saved_usd": round(float(table["saved_usd"].sum()), 6),
                "pending": waiting.height,
                "provider_batches": sorted(set(waiting["note_batch"].to_list())),
                **recordings_metadata(context, store, pricing, catalog.DIARY_NOTES, table),
                "preview": dg.MetadataValue.md(preview),
            }
        )
        return table

    return diary_notes


diary_notes_schema = schema_check(catalog.DIARY_NOTES, schemas.DIARY_NOTES)
