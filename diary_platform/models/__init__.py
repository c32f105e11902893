"""The models slice: the transcription models of the model registry measured on the golden set
(`model_evaluation`, with the `candidate_not_worse` gate), `promote_model`, which makes a candidate the
baseline when the gate allows it, `note_quality` (facts the notes state without a segment that backs
them, per note-writing model), and each day's transcript quality against the week before
(`transcript_quality`, with its drift and jump checks; closed by `daily_job`). The registry and the evaluation themselves are domain code
(domain/models/)."""

from dataclasses import asdict

import dagster as dg

from diary_platform.models.model_evaluation import ModelRegistryResource, candidate_not_worse, model_evaluation_asset
from diary_platform.models.note_quality import note_quality_asset, notes_supported
from diary_platform.models.promotion import promote_model
from diary_platform.models.transcript_quality import transcript_quality_definitions
from diary_platform.resources import WhisperTranscriber
from diary_platform.settings import Settings


def definitions(settings: Settings) -> dg.Definitions:
    registry_file = str(settings.model_registry) if settings.model_registry else None
    evaluation = dg.Definitions(
        assets=[model_evaluation_asset(settings), note_quality_asset(settings)],
        asset_checks=[candidate_not_worse, notes_supported],
        jobs=[promote_model],
        resources={
            "model_registry": ModelRegistryResource(registry_file=registry_file, whisper=WhisperTranscriber(**asdict(settings.transcriber)))
        },
    )
    return dg.Definitions.merge(evaluation, transcript_quality_definitions(settings))
