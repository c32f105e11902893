import time

import dagster as dg
import polars as pl

from diary_platform.assets.batch_asset import batch_asset, batch_metadata
from diary_platform.domain import stages
from diary_platform.domain.transcription import code_version
from diary_platform.resources import DiaryStorage, TranscriptGuards, WhisperTranscriber
from diary_platform.settings import Settings


@batch_asset(
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
    table = stages.transcribe(validated_audio, transcriber, guards.config(), storage.store)
    metadata = batch_metadata(table, time.perf_counter() - started, "audio_seconds")
    dropped = int(table["dropped_segments"].list.len().sum())
    context.add_output_metadata({**metadata, "model": transcriber.model_identity, "dropped_segments": dropped})
    return table
