import time
from datetime import datetime, timezone

import dagster as dg
import polars as pl

from diary_platform.batch.asset import batch_asset, batch_metadata, recordings_metadata, schema_check, step_span
from diary_platform.domain import catalog, schemas, stages
from diary_platform.domain.speech.policy import stale_batches
from diary_platform.domain.speech.transcription import code_version
from diary_platform.partitions import batch_partitions
from diary_platform.resources import PlatformPricing, StoreResource, TranscriptGuards, WhisperTranscriber
from diary_platform.settings import Settings

MIN_MEAN_LOG_PROBABILITY = -1.0


def transcripts_asset(settings: Settings) -> dg.AssetsDefinition:
    @batch_asset(
        settings,
        catalog.TRANSCRIPTS,
        pool="gpu",
        code_version=code_version(settings.transcriber, settings.guards),  # the policy's rules: per row, see stale
        description=(
            "faster-whisper transcripts with segments (guards drop invented text and list it), "
            "plus .txt/.srt/.vtt/.json files per recording."
        ),
    )
    def transcripts(
        context: dg.AssetExecutionContext,
        validated_audio: pl.DataFrame,
        store: StoreResource,
        whisper: WhisperTranscriber,
        guards: TranscriptGuards,
        pricing: PlatformPricing,
    ) -> pl.DataFrame:
        started = time.perf_counter()
        routing = whisper.routing(store.shared_state.model_promotions, datetime.now(timezone.utc))
        with step_span(context):
            table = stages.transcribe(validated_audio, whisper.policy(), guards.config(), store.store, routing)
        dropped = int(table["dropped_segments"].list.len().sum())
        scores = table["avg_logprob"].drop_nulls()
        context.add_output_metadata(
            {
                **batch_metadata(table, time.perf_counter() - started, "audio_seconds"),
                "models": dg.MetadataValue.json(
                    table.group_by("policy_rule", "model", "model_version", "arm").len().sort("policy_rule").to_dicts()
                ),
                "dropped_segments": dropped,
                **({"mean_avg_logprob": round(float(scores.mean()), 4)} if len(scores) else {}),
                **recordings_metadata(context, store, pricing, catalog.TRANSCRIPTS, table),
            }
        )
        return table

    return transcripts


transcripts_schema = schema_check(catalog.TRANSCRIPTS, schemas.TRANSCRIPTS)


@dg.asset_check(
    asset=catalog.TRANSCRIPTS,
    partitions_def=batch_partitions,
    description=f"Mean segment log-probability of the batch at least {MIN_MEAN_LOG_PROBABILITY}: below, the model was guessing.",
)
def mean_log_probability(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    table = store.catalog.batch(catalog.TRANSCRIPTS, context.partition_key)
    scores = table["avg_logprob"].drop_nulls()
    mean = float(scores.mean()) if len(scores) else None
    return dg.AssetCheckResult(
        passed=mean is None or mean >= MIN_MEAN_LOG_PROBABILITY,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"mean_avg_logprob": mean if mean is not None else float("nan"), "scored_recordings": len(scores)},
    )


CURRENT_MODELS = "current_models"


def stale_recordings(whisper: WhisperTranscriber, store: StoreResource, table: pl.DataFrame, now: datetime) -> dict[str, int]:
    """Batch key -> recordings of `table` that the model registry (the baseline in force, an experiment's arm)
    and the transcription policy would now transcribe with other settings."""
    routing = whisper.routing(store.shared_state.model_promotions, now)
    return stale_batches(whisper.policy(), table, lambda row: routing.transcription(row["user"])[1])


@dg.asset_check(
    asset=catalog.TRANSCRIPTS,
    name=CURRENT_MODELS,
    partitions_def=batch_partitions,
    description=(
        "Every transcript of the batch was made with the settings the model registry and the policy choose now. "
        "`promote_model` fails it for the batches a promotion leaves behind; backfill `retranscribe` over them."
    ),
)
def current_models(context: dg.AssetCheckExecutionContext, store: StoreResource, whisper: WhisperTranscriber) -> dg.AssetCheckResult:
    table = store.catalog.batch(catalog.TRANSCRIPTS, context.partition_key)
    stale = stale_recordings(whisper, store, table, datetime.now(timezone.utc)).get(context.partition_key, 0)
    return dg.AssetCheckResult(passed=not stale, severity=dg.AssetCheckSeverity.WARN, metadata={"stale_recordings": stale})
