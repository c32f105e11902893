import dagster as dg

from diary_platform.partitions import batch_partitions

process_batch = dg.define_asset_job(
    "process_batch",
    selection=dg.AssetSelection.assets("raw_audio", "validated_audio", "transcripts", "diary_notes"),
    partitions_def=batch_partitions,
    description="Everything one ingest batch goes through: ingest, validate, transcribe, write notes.",
)
