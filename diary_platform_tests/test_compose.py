"""The local stack (deploy/compose.yaml) and the GitHub Actions workflow, checked without a Docker engine.

There is no Docker engine here, so the stack is never started by these tests (the workflow's `compose`
job starts it). They check what can be checked offline: the compose file against the Compose
Specification's JSON schema (vendored in deploy/schemas/, see its README for source and licence), that
everything it mounts or builds from exists, that its services' references and the configuration files'
addresses meet, that the dashboard queries metrics the platform emits, and actionlint on the workflow.
"""

import json
import re
import subprocess
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Sum

from diary_platform.domain import instruments
from diary_platform_tests.conftest import unavailable

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
ACTIONLINT = REPO / ".venv-tools" / "bin" / "actionlint"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "diary-platform.json"
DEFAULTED = re.compile(r"\$\{\w+:-([^}]*)\}")

# The OpenTelemetry Collector's prometheus exporter (pkg/translator/prometheus, normalizeName, as in the
# pinned collector 0.114.0): units it spells out; any other unit is appended as written.
PROMETHEUS_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
    "Hz": "hertz", "1": "", "%": "percent",
}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _compose() -> dict:
    return _yaml(DEPLOY / "compose.yaml")


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _dockerfile_stages() -> set[str]:
    return set(re.findall(r"^FROM \S+ AS (\w+)$", (REPO / "Dockerfile").read_text(), re.M))


def _host_port(address: str) -> tuple[str, int]:
    """`host:port` or a URL, as (host, port)."""
    parsed = urlparse(address if "//" in address else f"//{address}")
    return parsed.hostname, parsed.port


# --- (a) the Compose Specification ---------------------------------------------------------------------


def test_the_compose_file_meets_the_compose_specification():
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema).iter_errors(_compose())]
    assert not errors, errors


def test_every_pulled_image_is_pinned_to_a_version():
    """A moving tag would make the stack a different one from one day to the next."""
    for name, service in _services().items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: {image}"


# --- (b) what it mounts and builds from ----------------------------------------------------------------


def test_everything_mounted_or_built_from_exists():
    compose = _compose()
    for name, service in compose["services"].items():
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), f"{name}: no Dockerfile in {context}"
            assert service["build"]["target"] in _dockerfile_stages(), f"{name}: no such build target"
        for volume in service.get("volumes", []):
            source = DEFAULTED.sub(r"\1", volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in compose["volumes"], f"{name} uses volume {source}, not declared"


# --- (c) dependencies ----------------------------------------------------------------------------------


def test_dependencies_name_services_that_exist_and_can_meet_their_condition():
    """Compose refuses to start a service that waits for another to be healthy when that one has no healthcheck."""
    services = _services()
    for name, service in services.items():
        for dependency, wait in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on {dependency}, which is no service"
            if wait["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no healthcheck"


# --- (d) the dashboard ---------------------------------------------------------------------------------


def _prometheus_series() -> dict[str, str]:
    """Every Prometheus series name the platform's instruments reach Prometheus under, with its instrument:
    one value recorded on each instrument of `instruments.Instruments`, then named as the collector does."""
    reader = InMemoryMetricReader()
    meters = instruments.Instruments.on(meter_provider=MeterProvider(metric_readers=[reader]))
    for field in fields(meters):
        instrument = getattr(meters, field.name)
        record = getattr(instrument, "add", None) or getattr(instrument, "record", None)
        if record is not None:
            record(1)
    series = {}
    for metric in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics:
        counter = isinstance(metric.data, Sum) and metric.data.is_monotonic
        # Per-units ("By/s") and gauges (`_ratio`) are not mirrored below; an annotation ("{token}") adds nothing.
        assert counter or isinstance(metric.data, Histogram), f"{metric.name}: extend the naming below"
        assert "/" not in metric.unit, f"{metric.name}: extend the naming below"
        tokens = re.findall(r"[^\W_]+", metric.name)
        annotation = bool(set(metric.unit) & set("{}"))
        unit = "" if annotation else "_".join(re.findall(r"[^\W_]+", PROMETHEUS_UNITS.get(metric.unit, metric.unit)))
        if unit and unit not in tokens:
            tokens.append(unit)
        if counter:
            tokens = [token for token in tokens if token != "total"] + ["total"]
        name = "_".join(tokens)
        suffixes = [""] if counter else ["_bucket", "_sum", "_count"]
        series.update({name + suffix: metric.name for suffix in suffixes})
    return series


def test_prometheus_names_follow_the_collector():
    series = _prometheus_series()
    assert series["diary_audio_seconds_total"] == "diary.audio.seconds"  # the unit is in the name already
    assert series["diary_llm_cost_USD_total"] == "diary.llm.cost"  # an unknown unit is appended as written
    assert series["diary_transcription_speed_bucket"] == "diary.transcription.speed"  # unit "1": nothing
    assert series["gen_ai_client_token_usage_bucket"] == "gen_ai.client.token.usage"  # unit "{token}": nothing
    assert series["gen_ai_client_operation_duration_seconds_bucket"] == "gen_ai.client.operation.duration"


def test_every_dashboard_panel_queries_metrics_the_platform_emits():
    series = _prometheus_series()
    dashboard = json.loads(DASHBOARD.read_text())
    sources = _yaml(COMPOSE / "grafana" / "provisioning" / "datasources" / "datasources.yaml")["datasources"]
    uids = {source["uid"] for source in sources}
    shown = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert (target.get("datasource") or panel["datasource"])["uid"] in uids, panel["title"]
            names = set(re.findall(r"\b(?:diary|gen_ai_client)_\w+", target["expr"]))  # the platform's and the GenAI conventions' metrics
            assert names, f"{panel['title']}: {target['expr']} queries no platform metric"
            assert names <= set(series), f"{panel['title']}: not emitted: {sorted(names - set(series))}"
            shown |= {series[name] for name in names}
    assert shown == set(series.values()), f"no panel for {sorted(set(series.values()) - shown)}"


# --- (e) addresses between the services ----------------------------------------------------------------


def test_the_collector_receives_where_the_platform_sends_and_exports_to_services():
    services = _services()
    config = _yaml(COMPOSE / "otel-collector.yaml")
    sent_to = _host_port(services["code"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    receiving = _host_port(config["receivers"]["otlp"]["protocols"]["http"]["endpoint"])
    assert sent_to == ("otel-collector", receiving[1]) and "otel-collector" in services
    assert _host_port(config["exporters"]["otlp/jaeger"]["endpoint"])[0] in services
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp/jaeger"] and pipelines["metrics"]["exporters"] == ["prometheus"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(config[kind]), f"{kind} used but not configured: {pipeline[kind]}"


def test_prometheus_scrapes_the_collectors_exporter():
    config = _yaml(COMPOSE / "prometheus.yml")
    exporter_port = _host_port(_yaml(COMPOSE / "otel-collector.yaml")["exporters"]["prometheus"]["endpoint"])[1]
    targets = [_host_port(t) for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert ("otel-collector", exporter_port) in targets
    assert {host for host, _ in targets} <= set(_services()), targets


def test_grafana_the_dagster_workspace_and_the_instance_point_at_services():
    services = _services()
    assert services["code"]["environment"]["DAGSTER_PG_HOST"] in services
    sources = _yaml(COMPOSE / "grafana" / "provisioning" / "datasources" / "datasources.yaml")["datasources"]
    assert {_host_port(source["url"])[0] for source in sources} <= set(services)
    provider = _yaml(COMPOSE / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")["providers"][0]
    assert f"./compose/grafana/dashboards:{provider['options']['path']}:ro" in services["grafana"]["volumes"]
    (location,) = _yaml(COMPOSE / "workspace.yaml")["load_from"]
    code = services["code"]["command"]
    assert location["grpc_server"]["host"] == "code"
    assert str(location["grpc_server"]["port"]) == code[code.index("--port") + 1]


# --- (f) the workflow ----------------------------------------------------------------------------------


def test_actionlint_finds_nothing_in_the_workflow():
    """Expression types, action inputs, runner labels and outdated action versions, before GitHub sees them."""
    if not ACTIONLINT.exists():
        unavailable(f"actionlint is not installed at {ACTIONLINT.relative_to(REPO)} (run `make tools`)")
    # shellcheck and pyflakes off: the same checks on every machine, whatever else it has on PATH.
    completed = subprocess.run(
        [str(ACTIONLINT), "-no-color", "-oneline", "-shellcheck=", "-pyflakes=", str(WORKFLOW.relative_to(REPO))],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_workflow_runs_make_test_on_the_services_it_needs_and_builds_the_images():
    workflow = _yaml(WORKFLOW)
    assert {"push", "pull_request"} <= set(workflow[True])  # PyYAML reads the key `on` as True
    test = workflow["jobs"]["test"]
    postgres = test["services"]["postgres"]
    assert postgres["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust" and "5432:5432" in postgres["ports"]
    assert "redis" in test["services"]
    steps = test["steps"]
    assert any(step.get("with", {}).get("python-version") == "3.11" for step in steps)
    assert any("chromium" in step.get("run", "") for step in steps)
    assert steps[-1]["run"].endswith("make test")
    targets = set(workflow["jobs"]["images"]["strategy"]["matrix"]["target"])
    assert {"production", "gpu"} <= targets <= _dockerfile_stages()
