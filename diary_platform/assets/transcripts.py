import time

import dagster as dg
import polars as pl

from diary_platform.assets.batch_asset import batch_asset, batch_metadata, step_span, schema_check, stored_table
from diary_platform.domain import stages
from diary_platform.domain.schemas import TRANSCRIPTS
from diary_platform.domain.speech.transcription import code_version
from diary_platform.resources import DiaryStorage, TranscriptGuards, WhisperTranscriber
from diary_platform.partitions import batch_partitions
from diary_platform.settings import Settings
from diary_platform.k8s import step_tags

MIN_MEAN_LOG_PROBABILITY = -1.0


@batch_asset(
    op_tags=step_tags("transcripts"),
    pool="gpu",
    code_version=code_version(Settings.from_env().transcriber, Settings.from_env().guards),
    description=(
        "faster-whisper transcripts with segments (guards drop invented text and list it), "
        "plus .txt/.srt/.vtt/.json files per recording."
    ),
)
def transcripts(
    context: dg.AssetExecutionContext,
    validated_audio: pl.DataFrame,
    storage: DiaryStorage,
    whisper: WhisperTranscriber,
    guards: TranscriptGuards,
) -> pl.DataFrame:
    started = time.perf_counter()
    transcriber = whisper.transcriber()
    with step_span(context):
        table = stages.transcribe(validated_audio, transcriber, guards.config(), storage.store)
    metadata = batch_metadata(table, time.perf_counter() - started, "audio_seconds")
    dropped = int(table["dropped_segments"].list.len().sum())
    context.add_output_metadata({**metadata, "model": transcriber.model_identity, "dropped_segments": dropped})
    return table


transcripts_schema = schema_check("transcripts", TRANSCRIPTS)


@dg.asset_check(
    asset="transcripts",
    partitions_def=batch_partitions,
    description=f"Mean segment log-probability of the batch at least {MIN_MEAN_LOG_PROBABILITY}: below, the model was guessing.",
)
def mean_log_probability(context: dg.AssetCheckExecutionContext, storage: DiaryStorage) -> dg.AssetCheckResult:
    table = stored_table(storage, "transcripts", context.partition_key)
    scores = table["avg_logprob"].drop_nulls()
    mean = float(scores.mean()) if len(scores) else None
    return dg.AssetCheckResult(
        passed=mean is None or mean >= MIN_MEAN_LOG_PROBABILITY,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"mean_avg_logprob": mean if mean is not None else float("nan"), "scored_recordings": len(scores)},
    )
