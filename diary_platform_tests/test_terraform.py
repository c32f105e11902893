"""terraform/ (Google Cloud): parsed with python-hcl2 and scanned with checkov.

Terraform itself is not available here, so nothing is validated, planned or applied against GCP. These tests
stand in for `terraform validate` where they can (every file parses, every reference resolves) and pin what
the rest of the platform relies on: the GPU pool's label and taint, the bucket names and tiers, the workload
identity binding, the private Cloud SQL instance and the secrets.
"""

import json
import re
import subprocess
import time
from functools import cache
from pathlib import Path

import hcl2
import pytest

from diary_platform_tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[1]
TERRAFORM = REPO / "terraform"
CHECKOV = REPO / ".venv-tools" / "bin" / "checkov"

EXPECTED_FILES = {
    "versions.tf", "main.tf", "variables.tf", "outputs.tf", "network.tf", "gke.tf",
    "storage.tf", "sql.tf", "registry.tf", "secrets.tf", "iam.tf",
}
SKIP_COMMENT = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")
HCL2_MARKERS = {"__is_block__", "__comments__", "__inline_comments__", "__start_line__", "__end_line__"}


# --- reading the HCL ---------------------------------------------------------------------------------------


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _plain(value):
    """python-hcl2 8 keeps the quotes of strings and block labels and adds `__is_block__`/`__comments__`
    entries; 7 does neither. Both become one shape: bare strings, no markers."""
    if isinstance(value, dict):
        return {_unquote(key): _plain(item) for key, item in value.items() if key not in HCL2_MARKERS}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


def _tf_files() -> list[Path]:
    return sorted(TERRAFORM.glob("*.tf"))


@cache
def _parsed() -> dict[str, dict]:
    """Each .tf file, parsed, by file name."""
    parsed = {}
    for path in _tf_files():
        with path.open() as handle:
            parsed[path.name] = _plain(hcl2.load(handle))
    return parsed


def _blocks(kind: str) -> list:
    return [block for tree in _parsed().values() for block in tree.get(kind, [])]


def _labelled(kind: str) -> dict[str, dict]:
    """Blocks with one label (variable, output) by label."""
    return {label: body for block in _blocks(kind) for label, body in block.items()}


def _resources() -> dict[str, dict]:
    """Every resource by address, e.g. "google_container_node_pool.gpu"."""
    return {
        f"{kind}.{name}": body
        for block in _blocks("resource")
        for kind, named in block.items()
        for name, body in named.items()
    }


def _resource(address: str) -> dict:
    resources = _resources()
    assert address in resources, f"terraform/ declares no {address}"
    return resources[address]


def _locals() -> dict:
    return {key: value for block in _blocks("locals") for key, value in block.items()}


def _expressions() -> str:
    """Everything the files say outside comments, as one string to search for references."""
    return json.dumps(list(_parsed().values()))


def _one(blocks: list) -> dict:
    assert len(blocks) == 1, f"expected one block, found {len(blocks)}"
    return blocks[0]


# --- files, variables and references ---------------------------------------------------------------------


def test_terraform_folder_has_the_expected_files():
    assert EXPECTED_FILES <= {path.name for path in _tf_files()}
    assert (TERRAFORM / "README.md").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_each_file_parses_with_hcl2(name):
    with (TERRAFORM / name).open() as handle:
        assert hcl2.load(handle), f"{name} parsed to nothing"


def test_every_variable_has_a_description_and_a_type():
    variables = _labelled("variable")
    assert variables
    for name, body in variables.items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"


def test_every_referenced_variable_is_declared_and_every_declared_one_is_used():
    declared = set(_labelled("variable"))
    referenced = set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", _expressions()))
    assert referenced - declared == set(), "referenced but not declared"
    assert declared - referenced == set(), "declared but never used"


def test_every_referenced_local_and_resource_exists():
    text = _expressions()
    missing_locals = set(re.findall(r"\blocal\.(\w+)", text)) - set(_locals())
    assert missing_locals == set()
    references = {f"{kind}.{name}" for kind, name in re.findall(r"(?<![\w.])((?:google|random)_\w+)\.(\w+)", text)}
    assert references - set(_resources()) == set()


def test_providers_are_google_6_with_terraform_1_5_or_newer():
    terraform = _one(_parsed()["versions.tf"]["terraform"])
    assert terraform["required_version"] == ">= 1.5"
    providers = {name: spec for block in terraform["required_providers"] for name, spec in block.items()}
    for name in ("google", "google-beta"):
        assert providers[name]["source"] == f"hashicorp/{name}"
        assert re.fullmatch(r"~> 6\.\d+", providers[name]["version"]), providers[name]["version"]


@pytest.mark.parametrize(
    "name, default",
    [
        ("region", "europe-west4"),
        ("cluster_name", "diary"),
        ("gpu_type", "nvidia-l4"),
        ("gpu_machine_type", "g2-standard-8"),
        ("gpu_max_nodes", 4),
        ("gpu_spot", True),
        ("cpu_machine_type", "e2-standard-4"),
        ("warm_after_days", 30),
        ("cold_after_days", 180),
        ("archive_after_days", 365),
        ("soft_delete_retention_days", 7),
        ("db_tier", "db-custom-2-7680"),
        ("k8s_namespace", "diary"),
        ("k8s_service_account", "diary-platform"),
    ],
)
def test_variable_defaults_match_the_platform(name, default):
    assert _labelled("variable")[name]["default"] == default


def test_gpu_type_is_limited_to_l4_and_t4():
    condition = _one(_labelled("variable")["gpu_type"]["validation"])["condition"]
    assert set(re.findall(r"nvidia-[\w-]+", condition)) == {"nvidia-l4", "nvidia-tesla-t4"}


# --- GKE -------------------------------------------------------------------------------------------------


def test_cluster_has_workload_identity_gcs_fuse_and_private_nodes():
    cluster = _resource("google_container_cluster.diary")
    assert _one(cluster["workload_identity_config"])["workload_pool"] == "${local.workload_identity_pool}"
    assert _locals()["workload_identity_pool"] == "${var.project_id}.svc.id.goog"
    addons = _one(cluster["addons_config"])
    assert _one(addons["gcs_fuse_csi_driver_config"])["enabled"] is True
    assert _one(cluster["private_cluster_config"])["enable_private_nodes"] is True
    assert _one(cluster["release_channel"])["channel"] == "REGULAR"
    assert cluster["remove_default_node_pool"] is True
    assert cluster["datapath_provider"] == "ADVANCED_DATAPATH"  # Dataplane V2 enforces NetworkPolicy
    assert cluster["enable_shielded_nodes"] is True


def test_gpu_pool_scales_from_zero_on_spot_nodes_with_one_gpu_and_the_gpu_taint():
    pool = _resource("google_container_node_pool.gpu")
    assert pool["cluster"] == "${google_container_cluster.diary.id}"
    autoscaling = _one(pool["autoscaling"])
    assert autoscaling["total_min_node_count"] == 0
    assert autoscaling["total_max_node_count"] == "${var.gpu_max_nodes}"
    node = _one(pool["node_config"])
    assert node["spot"] == "${var.gpu_spot}"
    assert node["machine_type"] == "${var.gpu_machine_type}"
    accelerator = _one(node["guest_accelerator"])
    assert accelerator["type"] == "${var.gpu_type}"
    assert accelerator["count"] == 1
    assert _one(accelerator["gpu_driver_installation_config"])["gpu_driver_version"] == "LATEST"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"} in node["taint"]
    assert _one(node["workload_metadata_config"])["mode"] == "GKE_METADATA"


def test_cpu_pool_autoscales_between_the_variables_and_is_hardened():
    pool = _resource("google_container_node_pool.cpu")
    assert pool["cluster"] == "${google_container_cluster.diary.id}"
    autoscaling = _one(pool["autoscaling"])
    assert autoscaling["total_min_node_count"] == "${var.cpu_min_nodes}"
    assert autoscaling["total_max_node_count"] == "${var.cpu_max_nodes}"
    node = _one(pool["node_config"])
    assert node["service_account"] == "${google_service_account.nodes.email}"
    assert _one(node["workload_metadata_config"])["mode"] == "GKE_METADATA"
    assert _one(node["shielded_instance_config"])["enable_secure_boot"] is True
    assert "taint" not in node


# --- storage ---------------------------------------------------------------------------------------------


def test_buckets_are_named_after_the_project_and_private():
    assert _locals()["landing_bucket"] == "${var.project_id}-diary-landing"
    assert _locals()["data_bucket"] == "${var.project_id}-diary-data"
    for address in ("landing", "data", "access_logs"):
        bucket = _resource(f"google_storage_bucket.{address}")
        assert bucket["uniform_bucket_level_access"] is True, address
        assert bucket["public_access_prevention"] == "enforced", address


def test_data_bucket_lifecycle_maps_ages_to_the_platform_tiers():
    bucket = _resource("google_storage_bucket.data")
    transitions = {
        _one(rule["action"])["storage_class"]: _one(rule["condition"])["age"]
        for rule in bucket["lifecycle_rule"]
        if _one(rule["action"])["type"] == "SetStorageClass"
    }
    assert transitions == {
        "NEARLINE": "${var.warm_after_days}",
        "COLDLINE": "${var.cold_after_days}",
        "ARCHIVE": "${var.archive_after_days}",
    }
    deletes = [_one(rule["condition"]) for rule in bucket["lifecycle_rule"] if _one(rule["action"])["type"] == "Delete"]
    assert {"days_since_noncurrent_time": "${var.noncurrent_version_retention_days}"} in deletes


def test_data_bucket_keeps_overwritten_and_deleted_objects_restorable():
    bucket = _resource("google_storage_bucket.data")
    assert _one(bucket["versioning"])["enabled"] is True
    retention = _one(bucket["soft_delete_policy"])["retention_duration_seconds"]
    assert "var.soft_delete_retention_days" in retention


def test_data_bucket_uri_output_points_at_the_diary_prefix():
    assert _labelled("output")["data_bucket_uri"]["value"] == "gs://${google_storage_bucket.data.name}/${local.data_prefix}"
    assert _locals()["data_prefix"] == "diary"


# --- Cloud SQL, registry, secrets ------------------------------------------------------------------------


def test_cloud_sql_is_postgres_15_private_only_with_backups_and_pitr():
    instance = _resource("google_sql_database_instance.dagster")
    assert instance["database_version"] == "POSTGRES_15"
    assert instance["deletion_protection"] is True
    settings = _one(instance["settings"])
    network = _one(settings["ip_configuration"])
    assert network["ipv4_enabled"] is False
    assert network["private_network"] == "${google_compute_network.diary.id}"
    backups = _one(settings["backup_configuration"])
    assert backups["enabled"] is True
    assert backups["point_in_time_recovery_enabled"] is True
    assert "maintenance_window" in settings
    assert "google_service_networking_connection.private_services" in json.dumps(instance["depends_on"])
    assert _resource("google_sql_database.dagster")["name"] == "dagster"
    assert _resource("google_sql_user.dagster")["password"] == "${random_password.dagster_pg.result}"


def test_artifact_registry_repo_is_docker_named_diary():
    repo = _resource("google_artifact_registry_repository.diary")
    assert repo["format"] == "DOCKER"
    assert repo["repository_id"] == "diary"


def test_the_three_secrets_exist_and_only_the_postgres_password_has_a_value_in_code():
    secrets = _resource("google_secret_manager_secret.platform")
    assert secrets["for_each"] == "${local.secret_ids}"
    assert set(_locals()["secret_ids"].values()) == {"openai-api-key", "anthropic-api-key", "dagster-pg-password"}
    versions = {address: body for address, body in _resources().items() if address.startswith("google_secret_manager_secret_version.")}
    assert list(versions) == ["google_secret_manager_secret_version.dagster_pg_password"]
    version = versions["google_secret_manager_secret_version.dagster_pg_password"]
    assert _locals()["secret_ids"]["dagster"] == "dagster-pg-password"
    assert version["secret"] == '${google_secret_manager_secret.platform["dagster"].id}'
    assert version["secret_data"] == "${random_password.dagster_pg.result}"


# --- IAM and network -------------------------------------------------------------------------------------


def test_workload_identity_binds_the_platform_service_account_to_its_kubernetes_one():
    binding = _resource("google_service_account_iam_member.workload_identity")
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["service_account_id"] == "${google_service_account.workload.name}"
    assert binding["member"] == "${local.workload_identity_member}"
    assert _locals()["workload_identity_member"] == (
        "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_namespace}/${var.k8s_service_account}]"
    )
    assert _resource("google_service_account.workload")["account_id"] == "diary-platform"


def test_workload_roles_are_scoped_to_the_buckets_secrets_and_cloud_sql():
    member = "${google_service_account.workload.member}"
    bucket_roles = {
        (body["bucket"], body["role"])
        for address, body in _resources().items()
        if address.startswith("google_storage_bucket_iam_member.") and body["member"] == member
    }
    assert ("${google_storage_bucket.data.name}", "roles/storage.objectAdmin") in bucket_roles
    # The landing bucket: read (the code location's mount) and create (the HTTP API's uploads), nothing that
    # overwrites or deletes an upload: objectCreator alone lacks storage.objects.delete.
    landing = "${google_storage_bucket.landing.name}"
    assert {role for bucket, role in bucket_roles if bucket == landing} == {
        "roles/storage.objectViewer", "roles/storage.objectCreator",
    }
    for role in ("roles/storage.objectAdmin", "roles/storage.objectUser", "roles/storage.admin"):
        assert (landing, role) not in bucket_roles, role
    assert not any(
        address.startswith(("google_storage_bucket_iam_binding.", "google_storage_bucket_iam_policy."))
        for address in _resources()
    ), "bucket roles are granted member by member"
    secrets = _resource("google_secret_manager_secret_iam_member.workload")
    assert secrets["for_each"] == "${google_secret_manager_secret.platform}"
    assert (secrets["role"], secrets["member"]) == ("roles/secretmanager.secretAccessor", member)
    project_roles = _resource("google_project_iam_member.workload")
    assert (project_roles["for_each"], project_roles["member"]) == ("${toset(local.workload_project_roles)}", member)
    assert set(_locals()["workload_project_roles"]) == {
        "roles/cloudsql.client", "roles/cloudtrace.agent", "roles/monitoring.metricWriter",
    }


def test_nodes_run_as_their_own_service_account_with_minimal_roles():
    assert _resource("google_project_iam_member.nodes")["for_each"] == "${toset(local.node_roles)}"
    roles = set(_locals()["node_roles"])
    assert {"roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer"} <= roles
    assert not any(role in roles for role in ("roles/editor", "roles/owner", "roles/storage.admin"))
    assert _resource("google_artifact_registry_repository_iam_member.nodes_pull")["role"] == "roles/artifactregistry.reader"


def test_private_nodes_reach_the_internet_through_cloud_nat_and_cloud_sql_through_private_services():
    nat = _resource("google_compute_router_nat.diary")
    assert nat["router"] == "${google_compute_router.diary.name}"
    subnet = _resource("google_compute_subnetwork.nodes")
    assert subnet["private_ip_google_access"] is True
    assert len(subnet["secondary_ip_range"]) == 2
    assert _resource("google_compute_global_address.private_services")["purpose"] == "VPC_PEERING"
    connection = _resource("google_service_networking_connection.private_services")
    assert connection["service"] == "servicenetworking.googleapis.com"


# --- checkov ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_report() -> dict:
    """One checkov run over terraform/ (offline: --skip-download), its JSON report."""
    if not CHECKOV.exists():
        unavailable(f"checkov is not installed at {CHECKOV.relative_to(REPO)} (run `make tools`)")
    started = time.monotonic()
    result = subprocess.run(
        [str(CHECKOV), "-d", "terraform", "--framework", "terraform", "-o", "json", "--skip-download"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    print(f"checkov ran in {time.monotonic() - started:.1f} s")
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1 means "found failures", checked below
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert [r["check_type"] for r in reports] == ["terraform"]
    return reports[0]


def _skip_comments() -> list[tuple[str, int, str, str]]:
    """(file, line, check id, justification) of every `checkov:skip=` comment in terraform/."""
    found = []
    for path in _tf_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = SKIP_COMMENT.search(line)
            if match:
                found.append((path.name, number, match.group(1), (match.group(2) or "").strip()))
    return found


def test_checkov_finds_no_failed_checks(checkov_report):
    summary = checkov_report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= 30, summary
    assert summary["passed"] > 0, summary
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in checkov_report["results"]["failed_checks"]]
    assert failed == []


def test_every_checkov_skip_has_a_real_justification():
    skips = _skip_comments()
    assert skips, "no checkov:skip comments found; if none are needed any more, drop this test"
    for file, line, check_id, justification in skips:
        assert re.fullmatch(r"CKV2?_GCP_\d+", check_id), f"{file}:{line}: unexpected id {check_id}"
        assert len(justification.split()) >= 8, f"{file}:{line}: {check_id} needs a justification, not {justification!r}"


def test_every_checkov_skip_suppresses_a_finding_on_its_own_resource(checkov_report):
    """A skip comment whose check does not apply to the resource it sits in is stale or misplaced."""
    skipped = {
        (Path(c["file_path"]).name, c["check_id"], tuple(c["file_line_range"]))
        for c in checkov_report["results"].get("skipped_checks", [])
    }
    for file, line, check_id, _ in _skip_comments():
        assert any(
            skipped_file == file and skipped_id == check_id and start <= line <= end
            for skipped_file, skipped_id, (start, end) in skipped
        ), f"{file}:{line}: {check_id} suppresses nothing"
