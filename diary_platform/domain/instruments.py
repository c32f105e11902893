"""Spans and metrics the domain code records, through the OpenTelemetry API only.

`current()` is bound to the global providers, so nothing is exported until
`diary_platform.telemetry.configure` installs them (until then every call is a cheap no-op). A caller
that wants its own providers (a test with in-memory exporters) binds them with `use()`.
"""

from dataclasses import dataclass

from opentelemetry import metrics, trace

RUN_ID = "dagster.run_id"
BATCH = "diary.batch"
SCOPE = "diary_platform"
# The GenAI semantic conventions' advisory bucket boundaries for their client metrics.
TOKEN_USAGE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
OPERATION_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


@dataclass(frozen=True)
class Instruments:
    tracer: trace.Tracer
    audio_seconds: metrics.Counter
    recordings: metrics.Counter
    transcription_speed: metrics.Histogram
    llm_tokens: metrics.Counter
    llm_cost: metrics.Counter
    llm_saved: metrics.Counter
    llm_fallbacks: metrics.Counter
    budget_alerts: metrics.Counter
    genai_token_usage: metrics.Histogram
    genai_operation_duration: metrics.Histogram

    @classmethod
    def on(
        cls, tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None
    ) -> "Instruments":
        """Instruments on these providers; the global ones when not given."""
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        return cls(
            tracer=trace.get_tracer(SCOPE, tracer_provider=tracer_provider),
            audio_seconds=meter.create_counter("diary.audio.seconds", unit="s", description="Audio transcribed"),
            recordings=meter.create_counter("diary.recordings", description="Recordings by stage and status"),
            transcription_speed=meter.create_histogram(
                "diary.transcription.speed", unit="1", description="Audio seconds per transcription second"
            ),
            llm_tokens=meter.create_counter(
                "diary.llm.tokens", description="Language-model tokens by provider, model, delivery and direction (input, cached_input, output)"
            ),
            llm_cost=meter.create_counter("diary.llm.cost", unit="USD", description="Language-model spend by provider, model and delivery"),
            llm_saved=meter.create_counter(
                "diary.llm.saved", unit="USD", description="What batch APIs and prompt caching saved against list prices"
            ),
            llm_fallbacks=meter.create_counter(
                "diary.llm.fallbacks", description="Notes not written by the first provider tried"
            ),
            budget_alerts=meter.create_counter(
                "diary.budget.alerts",
                description="Budget alerts by scope and level: a user's booking crossing the warning share or the budget "
                "(once each), the platform's day found past its share by the cost report's check (each evaluation)",
            ),
            # Named as the OpenTelemetry GenAI semantic conventions name them, so that GenAI-aware backends read them.
            genai_token_usage=meter.create_histogram(
                "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_USAGE_BUCKETS,
            ),
            genai_operation_duration=meter.create_histogram(
                "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=OPERATION_DURATION_BUCKETS,
            ),
        )


_current = Instruments.on()


def current() -> Instruments:
    return _current


def use(instruments: Instruments) -> Instruments:
    """Record through `instruments` from now on; returns the ones in use before, to restore them."""
    global _current
    previous, _current = _current, instruments
    return previous


def current_span() -> trace.Span:
    """The span of the recording being worked on, for attributes only known once the work is done."""
    return trace.get_current_span()


def recording_attributes(row: dict) -> dict:
    return {"diary.recording_id": row["recording_id"], "diary.user": row["user"], BATCH: row["batch_key"]}
