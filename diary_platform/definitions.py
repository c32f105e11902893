"""The one `Definitions` object: assets, jobs, sensors and the resources the environment picks."""

import dagster as dg

from diary_platform.assets.cost_report import cost_report, within_daily_budget
from diary_platform.assets.daily_digest import daily_digest, daily_job, daily_schedule, late_recordings_sensor
from diary_platform.assets.diary_notes import diary_notes, diary_notes_schema
from diary_platform.assets.raw_audio import raw_audio, raw_audio_schema
from diary_platform.assets.storage_tiers import storage_job, storage_schedule, storage_tiers
from diary_platform.assets.transcripts import mean_log_probability, transcripts, transcripts_schema
from diary_platform.assets.validated_audio import quarantine_share, validated_audio, validated_audio_schema
from diary_platform.jobs import process_batch
from diary_platform.k8s import executor
from diary_platform.resources import build_resources
from diary_platform.sensors.landing_sensor import landing_sensor
from diary_platform.settings import Settings

batch_assets = [raw_audio, validated_audio, transcripts, diary_notes]
batch_checks = [
    raw_audio_schema,
    validated_audio_schema,
    quarantine_share,
    transcripts_schema,
    mean_log_probability,
    diary_notes_schema,
]


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[*batch_assets, daily_digest, cost_report, storage_tiers],
        asset_checks=[*batch_checks, within_daily_budget],
        jobs=[process_batch, daily_job, storage_job],
        schedules=[daily_schedule, storage_schedule],
        sensors=[landing_sensor, late_recordings_sensor],
        resources=build_resources(settings),
        executor=executor(settings),
    )


defs = build_definitions(Settings.from_env())
