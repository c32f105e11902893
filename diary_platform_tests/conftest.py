import shutil
import socket
from pathlib import Path

import dagster as dg
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from diary_platform import telemetry

from diary_platform.evaluation import Reference, read_manifest
from diary_platform.settings import Settings

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def clips() -> list[Reference]:
    return read_manifest(DATA / "manifest.jsonl")


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings from the environment, with the data and landing folders in a temp folder."""
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIARY_LANDING", str(tmp_path / "landing"))
    monkeypatch.setenv("DIARY_BATCH_MAX_WAIT_SECONDS", "0")
    return Settings.from_env()


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def drop(landing: Path, user: str, source: Path, name: str | None = None) -> Path:
    """Put a file into the landing folder the way an upload would end up there."""
    target = landing / user / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return target


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def telemetry_exporters():
    """OpenTelemetry for the whole session: in-memory spans and metrics, and the Prometheus endpoint."""
    port = _free_port()
    spans = InMemorySpanExporter()
    metrics = InMemoryMetricReader()
    telemetry.configure(span_exporter=spans, metric_reader=metrics, prometheus_port=port)
    return {"spans": spans, "metrics": metrics, "prometheus_port": port}
