"""OpenTelemetry for the platform: traces and metrics, configured from the standard OTEL_* variables.

- Traces go to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable)
  is set, to the console with `OTEL_TRACES_EXPORTER=console`, nowhere otherwise.
- Metrics go to OTLP likewise, and are served for Prometheus on `DIARY_PROMETHEUS_PORT` when set.
- Every span carries the Dagster run id (and batch) of the step it belongs to, copied from baggage.
- A sensor tick's trace context travels into the run it requests as the run tag `diary/traceparent`.

Domain code only uses the OpenTelemetry API (domain/instruments.py), which does nothing until this
module configures providers; tests configure them with in-memory exporters.
"""

import logging
import os
import threading

from opentelemetry import baggage, context, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from diary_platform.domain.instruments import BATCH, RUN_ID

TRACEPARENT_TAG = "diary/traceparent"
_configured = False
_lock = threading.Lock()


class _StepAttributes(SpanProcessor):
    """Copies the Dagster run id and batch from baggage onto every span started under a step."""

    def on_start(self, span, parent_context=None) -> None:
        for key in (RUN_ID, BATCH):
            value = baggage.get_baggage(key, parent_context)
            if value is not None:
                span.set_attribute(key, str(value))


def tracer_provider(*exporters: SpanExporter) -> TracerProvider:
    """A tracer provider that stamps step attributes on every span and sends spans to `exporters` as they end."""
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(_StepAttributes())
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _resource() -> Resource:
    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "diary-platform")})


def configure() -> None:
    """Install the global providers once per process, with the exporters the environment asks for."""
    global _configured
    with _lock:
        if _configured:
            return
        traces = tracer_provider()
        if _otlp_endpoint("TRACES"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            traces.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif os.environ.get("OTEL_TRACES_EXPORTER") == "console":
            traces.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        readers: list[MetricReader] = []
        if _otlp_endpoint("METRICS"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        port = int(os.environ.get("DIARY_PROMETHEUS_PORT") or 0)
        if port:
            readers.extend(prometheus_readers(port))
        trace.set_tracer_provider(traces)
        metrics.set_meter_provider(MeterProvider(resource=_resource(), metric_readers=readers))
        _configured = True


def prometheus_readers(port: int, registry=None) -> list[MetricReader]:
    """Serve /metrics on 127.0.0.1:port from `registry` (prometheus_client's default registry when None);
    a port already taken (another process) costs only the endpoint."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, start_http_server

    registry = registry or REGISTRY
    try:
        start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as error:
        logging.getLogger(__name__).warning("Prometheus endpoint on port %s not started: %s", port, error)
        return []
    return [PrometheusMetricReader(registry=registry)]


def _otlp_endpoint(signal: str) -> bool:
    return bool(os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def traceparent_tags() -> dict[str, str]:
    """The current trace context as run tags, for a run a sensor requests."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return {TRACEPARENT_TAG: carrier["traceparent"]} if "traceparent" in carrier else {}


def link_to(traceparent: str) -> trace.Link | None:
    """A span link to the span a W3C traceparent names (an upload's request), or None if it names none."""
    span_context = trace.get_current_span(TraceContextTextMapPropagator().extract({"traceparent": traceparent})).get_span_context()
    return trace.Link(span_context) if span_context.is_valid else None


def step_context(run_id: str, batch: str | None, tags: dict[str, str]) -> context.Context:
    """The parent context of a step's span: the sensor tick's trace (if any) plus run id and batch baggage."""
    parent = context.Context()
    if TRACEPARENT_TAG in tags:
        parent = TraceContextTextMapPropagator().extract({"traceparent": tags[TRACEPARENT_TAG]})
    parent = baggage.set_baggage(RUN_ID, run_id, parent)
    if batch:
        parent = baggage.set_baggage(BATCH, batch, parent)
    return parent
