"""The job every batch runs, whoever asks for it: the landing sensor, recovery, a re-drive, `diary run`."""

import dagster as dg

from diary_platform.domain import catalog

PROCESS_BATCH = "process_batch"

process_batch = dg.define_asset_job(
    PROCESS_BATCH,
    selection=dg.AssetSelection.assets(*catalog.BATCH_TABLES),
    description="Everything one ingest batch goes through: ingest, validate, transcribe, write notes.",
)
