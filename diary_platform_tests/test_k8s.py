"""Step pods in the `k8s` environment, built by dagster-k8s's own job construction (no cluster needed).

This follows what `K8sStepHandler.launch_step` does: the executor's container context, merged with the
step's `dagster-k8s/config` tags, turned into a V1Job by `construct_dagster_k8s_job`.
"""

import json
import os
import subprocess
import sys

import kubernetes
import kubernetes_validate
import pytest
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

from diary_platform import k8s

IMAGE = "europe-west4-docker.pkg.dev/diary-prod/diary/diary-platform:1.0.0"
GPU_IMAGE = "europe-west4-docker.pkg.dev/diary-prod/diary/diary-platform-gpu:1.0.0"
K8S_VERSION = "1.31"


K8S_ENV = {"DIARY_ENVIRONMENT": "k8s", "DIARY_GPU_ACCELERATOR": "nvidia-tesla-t4", "DIARY_GPU_IMAGE": GPU_IMAGE}


@pytest.fixture
def k8s_settings(monkeypatch):
    for name, value in K8S_ENV.items():
        monkeypatch.setenv(name, value)
    from diary_platform.settings import Settings

    return Settings.from_env()


def _step_job(settings, name: str, tags: dict) -> dict:
    """The Kubernetes Job the k8s_job_executor would create for this asset's step."""
    config = k8s.executor_config(settings.kubernetes)
    executor_context = K8sContainerContext(
        namespace=config["job_namespace"],
        service_account_name=config["service_account_name"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"]),
    )
    step_context = executor_context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(job_image=IMAGE, dagster_home="/opt/dagster/dagster_home", instance_config_map="dagster-instance"),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{name.replace('_', '-')}",
        pod_name=f"dagster-step-{name.replace('_', '-')}",
        component="step_worker",
        user_defined_k8s_config=step_context.run_k8s_config,
        labels={"dagster/op": name},
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


STEPS_SCRIPT = """
import json
from diary_platform.definitions import defs
assets = (defs.resolve_assets_def(key) for key in defs.resolve_all_asset_keys())
print(json.dumps({a.op.name: {"tags": dict(a.op.tags), "pool": a.op.pool} for a in assets}))
"""


def _steps(env: dict[str, str]) -> dict[str, dict]:
    """Each asset's op tags and pool as a fresh process with this environment defines them (the settings
    are read when the definitions are imported, as in a deployed code server)."""
    completed = subprocess.run([sys.executable, "-c", STEPS_SCRIPT], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def test_the_k8s_environment_selects_the_k8s_job_executor_and_gpu_defaults(k8s_settings):
    from diary_platform.definitions import build_definitions

    assert build_definitions(k8s_settings).executor.name == "k8s_job_executor"
    transcriber = k8s_settings.transcriber
    assert (transcriber.device, transcriber.compute_type, transcriber.batched) == ("cuda", "float16", True)


def test_a_model_named_in_both_images_gives_one_code_version(monkeypatch):
    """The code server (CPU image, no model on disk) and the GPU step (model in its Hugging Face cache)
    must compute the same transcripts code_version: a model given by name is identified by its name."""
    from diary_platform.domain.speech.transcription import code_version
    from diary_platform.settings import Settings

    for name, value in {**K8S_ENV, "DIARY_MODEL": "large-v3-turbo"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert code_version(settings.transcriber).startswith("transcribe-v2|large-v3-turbo|float16|")


def test_the_local_environment_keeps_the_default_executor_and_cpu_int8(settings):
    from diary_platform.definitions import build_definitions

    assert build_definitions(settings).executor is None
    assert (settings.transcriber.device, settings.transcriber.compute_type) == ("cpu", "int8")


def test_only_the_transcripts_step_asks_for_a_gpu(k8s_settings):
    steps = _steps(K8S_ENV)
    assert set(steps) == {"raw_audio", "validated_audio", "transcripts", "diary_notes", "daily_digest", "cost_report", "storage_tiers"}
    for name, step in steps.items():
        job = _step_job(k8s_settings, name, step["tags"])
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
        assert resources["limits"]["memory"] == resources["requests"]["memory"], name
        assert pod.get("serviceAccountName") is None or pod["serviceAccountName"] == "diary-platform"
        if name == "transcripts":
            assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"]["nvidia.com/gpu"] == "1"
            assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            assert container["image"] == GPU_IMAGE
            assert step["pool"] == "gpu"
        else:
            assert "nvidia.com/gpu" not in resources.get("limits", {}) and "nvidia.com/gpu" not in resources["requests"], name
            assert not pod.get("nodeSelector") and not pod.get("tolerations"), name
            assert container["image"] == IMAGE, name


def test_the_note_writing_steps_share_the_llm_pool():
    steps = _steps({})
    assert steps["diary_notes"]["pool"] == "llm" and steps["daily_digest"]["pool"] == "llm"
    assert steps["transcripts"]["pool"] == "gpu" and steps["raw_audio"]["pool"] is None
    assert "nvidia-l4" in steps["transcripts"]["tags"]["dagster-k8s/config"], "the default accelerator"
