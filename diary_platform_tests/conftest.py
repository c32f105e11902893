import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from diary_platform import telemetry
from diary_platform.domain import instruments

from diary_platform.definitions import build_definitions
from diary_platform.evaluation import Reference, read_manifest
from diary_platform.settings import Settings

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def clips() -> list[Reference]:
    return read_manifest(DATA / "manifest.jsonl")


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings from the environment, with the data and landing folders and the instance in a temp folder."""
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster_home"))
    monkeypatch.setenv("DIARY_LANDING", str(tmp_path / "landing"))
    monkeypatch.setenv("DIARY_BATCH_MAX_WAIT_SECONDS", "0")
    return Settings()


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    meter_provider: MeterProvider


@pytest.fixture
def telemetry_readers():
    """This test's own in-memory span exporter and metric reader, bound to the platform's instruments."""
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    previous = instruments.use(instruments.Instruments.on(telemetry.tracer_provider(spans), meter_provider))
    yield Telemetry(spans, reader, meter_provider)
    instruments.use(previous)
    meter_provider.shutdown()


def new_batch(settings: Settings, files: list[Path], user: str = "alice"):
    """A batch of these files, claimed and written as `diary run` writes one (not yet run)."""
    from datetime import datetime, timezone

    from diary_platform.domain.ingest.claims import Owner
    from diary_platform.domain.ingest.landing import Intake, batch_files
    from diary_platform.domain.ingest.recovery import BatchState
    from diary_platform.domain.shared_state import open_shared_state

    state = open_shared_state(settings.data_dir)
    intake = Intake(state.batches, state.claims, Owner.this_process("test"), lambda key: BatchState.DONE)
    [manifest], _ = batch_files(files, user, datetime.now(timezone.utc), intake, settings.batch_limits)
    return manifest


def run_job(settings: Settings, name: str, instance: dg.DagsterInstance, **options) -> dg.ExecuteInProcessResult:
    """A job of the definitions these settings build, run in this process as a launched run would run it."""
    return build_definitions(settings).resolve_job_def(name).execute_in_process(instance=instance, **options)


def unavailable(message: str) -> None:
    """A service a test needs is missing: a failure in CI, a skip with the reason on a laptop."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator on 127.0.0.1 (in memory); google-cloud-storage finds it through
    STORAGE_EMULATOR_HOST, as it would find a real endpoint."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    yield os.environ["STORAGE_EMULATOR_HOST"]
    server.stop()
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_emulator):
    """A fresh bucket per test, through the real google-cloud-storage client."""
    from google.cloud import storage

    client = storage.Client(project="diary-test")
    bucket = client.create_bucket(f"diary-{uuid.uuid4().hex[:12]}")
    return client, bucket


POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@pytest.fixture
def postgres_database():
    """A new, empty database on the local Postgres for one test, dropped afterwards."""
    import psycopg2

    try:
        socket.create_connection((POSTGRES["host"], POSTGRES["port"]), timeout=3).close()
    except OSError as error:
        unavailable(f"Postgres is not listening on 127.0.0.1:5432 ({error})")
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **POSTGRES)
    except psycopg2.OperationalError as error:
        pytest.fail(f"Postgres on 127.0.0.1:5432 refused user {POSTGRES['user']!r} ({error}); the tests need trust auth")
    admin.autocommit = True
    name = f"diary_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield {**POSTGRES, "dbname": name}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
