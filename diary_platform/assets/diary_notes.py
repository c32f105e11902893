import time

import dagster as dg
import polars as pl

from diary_platform.assets.batch_asset import batch_asset, batch_metadata, step_span, schema_check
from diary_platform.domain import stages
from diary_platform.domain.schemas import DIARY_NOTES, STATUS_OK
from diary_platform.resources import DiaryStorage, NoteWriterResource
from diary_platform.k8s import step_tags

PREVIEW_NOTES = 5


@batch_asset(
    op_tags=step_tags("diary_notes"),
    pool="llm",
    code_version="1",
    description="A structured diary note per recording (title, summary, events, people, places, to-dos, mood).",
)
def diary_notes(
    context: dg.AssetExecutionContext,
    transcripts: pl.DataFrame,
    storage: DiaryStorage,
    note_writer: NoteWriterResource,
) -> pl.DataFrame:
    started = time.perf_counter()
    with step_span(context):
        table = stages.write_notes(transcripts, note_writer.build(), storage.store)
    written = table.filter(pl.col("status") == STATUS_OK)
    preview = "\n\n---\n\n".join(written["markdown"].head(PREVIEW_NOTES).to_list()) or "*No notes in this batch.*"
    context.add_output_metadata(
        {
            **batch_metadata(table, time.perf_counter() - started),
            "cost_usd": float(table["cost_usd"].sum()),
            "preview": dg.MetadataValue.md(preview),
        }
    )
    return table


diary_notes_schema = schema_check("diary_notes", DIARY_NOTES)
