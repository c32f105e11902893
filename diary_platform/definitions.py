"""The one `Definitions` object: assets, jobs, sensors and the resources the environment picks."""

import dagster as dg

from diary_platform.assets.diary_notes import diary_notes
from diary_platform.assets.raw_audio import raw_audio
from diary_platform.assets.transcripts import transcripts
from diary_platform.assets.validated_audio import validated_audio
from diary_platform.jobs import process_batch
from diary_platform.resources import build_resources
from diary_platform.sensors.landing_sensor import landing_sensor
from diary_platform.settings import Settings

batch_assets = [raw_audio, validated_audio, transcripts, diary_notes]


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=batch_assets,
        jobs=[process_batch],
        sensors=[landing_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions(Settings.from_env())
