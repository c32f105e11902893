"""Spans and metrics the domain code records, through the OpenTelemetry API only.

Nothing is exported until `diary_platform.telemetry.configure` installs providers; until then every
call here is a cheap no-op.
"""

from opentelemetry import metrics, trace

RUN_ID = "dagster.run_id"
BATCH = "diary.batch"

tracer = trace.get_tracer("diary_platform")
meter = metrics.get_meter("diary_platform")
audio_seconds = meter.create_counter("diary.audio.seconds", unit="s", description="Audio transcribed")
recordings = meter.create_counter("diary.recordings", description="Recordings by stage and status")
transcription_speed = meter.create_histogram(
    "diary.transcription.speed", unit="1", description="Audio seconds per transcription second"
)
llm_tokens = meter.create_counter("diary.llm.tokens", description="Language-model tokens by provider, model and direction")
llm_cost = meter.create_counter("diary.llm.cost", unit="USD", description="Language-model spend")
llm_fallbacks = meter.create_counter("diary.llm.fallbacks", description="Notes not written by the first provider tried")


def recording_attributes(row: dict) -> dict:
    return {"diary.recording_id": row["recording_id"], "diary.user": row["user"], BATCH: row["batch_key"]}
