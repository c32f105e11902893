"""The job every batch runs, whoever asks for it: the landing sensor, recovery, a re-drive, `diary run`."""

import dagster as dg

from diary_platform.domain import catalog

PROCESS_BATCH = "process_batch"

process_batch = dg.define_asset_job(
    PROCESS_BATCH,
    selection=dg.AssetSelection.assets(*catalog.BATCH_TABLES),
    description="Everything one ingest batch goes through: ingest, validate, transcribe, write notes.",
)

RETRANSCRIBE = "retranscribe"

retranscribe = dg.define_asset_job(
    RETRANSCRIBE,
    selection=dg.AssetSelection.assets(catalog.TRANSCRIPTS, catalog.DIARY_NOTES),
    description=(
        "Transcripts and notes of a batch again, from its stored validated audio (the uploads are not read): "
        "for the batches `diary stale` lists after a transcription policy change."
    ),
)
