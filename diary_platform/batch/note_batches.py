"""Notes that wait for a provider batch: the sensor that polls the batches and the job that collects them.

The notes step submits the waiting notes of its partition as provider batches and materializes `diary_notes`
with those rows `pending`. This sensor polls the batches (domain/notes/batch_poller.py) and, when one has
ended, asks for a `collect_notes` run of that partition: `diary_notes` materialized again, its written
notes kept, the pending ones filled from the batch's answers (or written at once where an answer is
missing). The asset is one table per partition that becomes complete, rather than a second asset, so the
digest, the cost report and lineage read notes from one place whatever way they were written.
"""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from diary_platform.domain import catalog
from diary_platform.domain.notes.batch_poller import poll_round
from diary_platform.domain.notes.note_batches import NoteBatch
from diary_platform.domain.schemas import STATUS_PENDING
from diary_platform.resources import NoteWriterResource, StoreResource

COLLECT_NOTES = "collect_notes"
COLLECT_TAG = "diary/note_batch"

collect_notes = dg.define_asset_job(
    COLLECT_NOTES,
    selection=dg.AssetSelection.assets(catalog.DIARY_NOTES),
    description="The notes of a batch partition again once a provider batch it waits for has ended: written notes kept, pending ones filled.",
)


@dg.sensor(
    job_name=COLLECT_NOTES,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls the provider batches of waiting notes and asks for their collection once they end.",
)
def note_batches_sensor(context: dg.SensorEvaluationContext, store: StoreResource, note_writer: NoteWriterResource):
    def waiting_rows(record: NoteBatch) -> int | None:
        if not store.catalog.has(catalog.DIARY_NOTES, record.batch_key):
            return None
        notes = store.catalog.batch(catalog.DIARY_NOTES, record.batch_key)
        if "note_batch" not in notes.columns:
            return 0
        return notes.filter((pl.col("status") == STATUS_PENDING) & (pl.col("note_batch") == record.id)).height

    now = datetime.now(timezone.utc)
    round_ = poll_round(note_writer.build(), store.shared_state.note_batches, waiting_rows, now)
    summary = (
        f"asked {round_.asked} provider batches: {round_.still_open} still open, {round_.unreachable} unreachable; "
        f"{len(round_.to_collect)} to collect, {round_.finished} finished"
    )
    context.log.info(summary)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=record.batch_key, run_key=f"{record.id}-{record.polls}", tags={COLLECT_TAG: record.id})
            for record in round_.to_collect
        ],
        skip_reason=None if round_.to_collect else summary,
    )
