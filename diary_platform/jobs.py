import dagster as dg

process_batch = dg.define_asset_job(
    "process_batch",
    selection=dg.AssetSelection.assets("raw_audio", "validated_audio", "transcripts", "diary_notes"),
    description="Everything one ingest batch goes through: ingest, validate, transcribe, write notes.",
)
