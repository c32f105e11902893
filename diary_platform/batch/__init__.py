"""The batch slice: what one ingest batch goes through (four assets and their checks), its job, the landing
sensor that makes batches, the recovery sensor that resumes them, the sensor that collects notes from provider batches, the job that re-drives the quarantine, and
the retention job that retires old batches from Dagster when a retention is set."""

import dagster as dg

from diary_platform.batch.diary_notes import diary_notes_asset, diary_notes_schema
from diary_platform.batch.note_batches import collect_notes, note_batches_sensor
from diary_platform.batch.landing_sensor import landing_bucket_sensor, landing_sensor
from diary_platform.batch.process_batch import PROCESS_BATCH, RETRANSCRIBE, process_batch, retranscribe
from diary_platform.batch.raw_audio import raw_audio_asset, raw_audio_schema
from diary_platform.batch.recovery import recovery_sensor
from diary_platform.batch.redrive import redrive_job, redriven_batches
from diary_platform.batch.retention import retention_definitions
from diary_platform.batch.webhooks import webhooks_sensor
from diary_platform.batch.transcripts import current_models, mean_log_probability, transcripts_asset, transcripts_schema
from diary_platform.batch.validated_audio import quarantine_share, validated_audio_asset, validated_audio_schema
from diary_platform.settings import Settings

CHECKS = [
    raw_audio_schema,
    validated_audio_schema,
    quarantine_share,
    transcripts_schema,
    mean_log_probability,
    current_models,
    diary_notes_schema,
]


def assets(settings: Settings) -> list[dg.AssetsDefinition]:
    return [
        raw_audio_asset(settings),
        validated_audio_asset(settings),
        transcripts_asset(settings),
        diary_notes_asset(settings),
    ]


def definitions(settings: Settings) -> dg.Definitions:
    batches = dg.Definitions(
        assets=assets(settings),
        asset_checks=CHECKS,
        jobs=[process_batch, redrive_job, retranscribe, collect_notes],
        sensors=[landing_bucket_sensor if settings.landing_uri else landing_sensor, recovery_sensor, redriven_batches, note_batches_sensor,
                 webhooks_sensor(settings)],
    )
    if not settings.partition_retention_days:
        return batches
    return dg.Definitions.merge(batches, retention_definitions(settings.partition_retention_days))
