"""Step pods in the `k8s` environment, as dagster-k8s itself creates them (no cluster needed).

For every step of every job, the definitions' own `k8s_job_executor` (its configuration resolved as a
run resolves it) builds its `K8sStepHandler`, and `launch_step` turns the run, the executor's settings
and the step's tags into the Job it sends to the Kubernetes API: here a recording client stands in for
the cluster. Each Job is validated against the Kubernetes schemas.
"""

from unittest import mock

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._core.test_utils import create_run_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s.client import DagsterKubernetesClient

from diary_platform.definitions import build_definitions
from diary_platform.domain.speech.transcription import code_version
from diary_platform.settings import Settings

IMAGE = "europe-west4-docker.pkg.dev/diary-prod/diary/diary-platform:1.0.0"
GPU_IMAGE = "europe-west4-docker.pkg.dev/diary-prod/diary/diary-platform-gpu:1.0.0"
K8S_VERSION = "1.31"
K8S_ENV = {"DIARY_ENVIRONMENT": "k8s", "DIARY_GPU_ACCELERATOR": "nvidia-tesla-t4", "DIARY_GPU_IMAGE": GPU_IMAGE}
JOBS = {"process_batch": "2026-11-26T090000Z", "daily_job": "2026-11-26", "storage_job": None}
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: gke, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: diary, user: {token: unused}}]
contexts: [{name: gke, context: {cluster: gke, user: diary}}]
current-context: gke
"""


@pytest.fixture
def k8s_settings(monkeypatch, tmp_path):
    for name, value in K8S_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    return Settings()


@pytest.fixture
def launched_jobs(k8s_settings, tmp_path, monkeypatch) -> dict[str, dict]:
    """The Kubernetes Job of every step, as the step handler sends it to the API, by step key."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    batch_api = mock.MagicMock()
    production_client = DagsterKubernetesClient.production_client
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)  # as inside a pod
    monkeypatch.setattr(
        DagsterKubernetesClient, "production_client", staticmethod(lambda **_: production_client(batch_api_override=batch_api))
    )
    launcher = {
        "module": "dagster_k8s", "class": "K8sRunLauncher",
        "config": {
            "job_image": IMAGE, "instance_config_map": "dagster-instance", "dagster_home": "/opt/dagster/dagster_home",
            "load_incluster_config": False, "kubeconfig_file": str(kubeconfig), "service_account_name": "dagster",
        },
    }
    repository = ReconstructableRepository.for_module("diary_platform.definitions", "defs", working_directory=str(tmp_path))
    jobs = {}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        for job_name, partition in JOBS.items():
            job = repository.get_reconstructable_job(job_name)
            job_def = job.get_definition()
            config = ResolvedRunConfig.build(job_def, {}).execution.execution_engine_config
            executor = job_def.executor_def.executor_creation_fn(
                InitExecutorContext(job=job, executor_def=job_def.executor_def, executor_config=config, instance=instance)
            )
            tags = {"dagster/partition": partition} if partition else {}
            run = create_run_for_test(instance, job_name=job_name, job_code_origin=job.get_python_origin(), tags=tags)
            plan = create_execution_plan(job, tags=tags)
            plan_context = PlanOrchestrationContext(
                plan_data=PlanData(
                    job=job, dagster_run=run, instance=instance, execution_plan=plan, raise_on_error=True,
                    retry_mode=RetryMode.DISABLED,
                ),
                log_manager=create_context_free_log_manager(instance, run),
                executor=executor,
                output_capture=None,
            )
            for step in plan.steps:
                batch_api.reset_mock()
                context = StepHandlerContext(
                    instance=instance, plan_context=plan_context, steps=plan.steps,
                    execute_step_args=ExecuteStepArgs(job.get_python_origin(), run.run_id, [step.key]),
                )
                list(executor._step_handler.launch_step(context))
                [(method, _, sent)] = batch_api.method_calls
                assert method == "create_namespaced_job" and sent["namespace"] == k8s_settings.kubernetes.namespace
                jobs[step.key] = kubernetes.client.ApiClient().sanitize_for_serialization(sent["body"])
    return jobs


def test_the_k8s_environment_selects_the_k8s_job_executor_and_gpu_defaults(k8s_settings):
    assert build_definitions(k8s_settings).executor.name == "k8s_job_executor"
    transcriber = k8s_settings.transcriber
    assert (transcriber.device, transcriber.compute_type, transcriber.batched) == ("cuda", "float16", True)


def test_a_model_named_in_both_images_gives_one_code_version(monkeypatch):
    """The code server (CPU image, no model on disk) and the GPU step (model in its Hugging Face cache)
    must compute the same transcripts code_version: a model given by name is identified by its name."""
    for name, value in {**K8S_ENV, "DIARY_MODEL": "large-v3-turbo"}.items():
        monkeypatch.setenv(name, value)
    assert code_version(Settings().transcriber).startswith("transcribe-v2|large-v3-turbo|float16|")


def test_the_local_environment_runs_steps_in_the_run_process_on_cpu_int8(settings):
    assert build_definitions(settings).executor.name == "in_process"
    assert (settings.transcriber.device, settings.transcriber.compute_type) == ("cpu", "int8")


def test_only_the_transcripts_step_asks_for_a_gpu(launched_jobs, k8s_settings):
    assets = {"raw_audio", "validated_audio", "transcripts", "diary_notes", "daily_digest", "cost_report", "storage_tiers", "transcript_quality"}
    checks = {
        "raw_audio_schema", "validated_audio_schema", "validated_audio_quarantine_share", "transcripts_schema",
        "transcripts_mean_log_probability", "transcripts_current_models", "diary_notes_schema", "cost_report_within_daily_budget",
        "cost_report_budget_warning",
        "transcript_quality_quality_drift", "transcript_quality_quarantine_or_guard_jump",
    }
    assert set(launched_jobs) == assets | checks
    for name in checks:
        resources = launched_jobs[name]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}, "the executor's default"
    for name, job in launched_jobs.items():
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
        assert resources["limits"]["memory"] == resources["requests"]["memory"], name
        assert pod["serviceAccountName"] == k8s_settings.kubernetes.service_account, name
        assert job["metadata"]["labels"]["dagster/op"] == name
        if name == "transcripts":
            assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"]["nvidia.com/gpu"] == "1"
            assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            assert container["image"] == GPU_IMAGE
        else:
            assert "nvidia.com/gpu" not in resources.get("limits", {}) and "nvidia.com/gpu" not in resources["requests"], name
            assert not pod.get("nodeSelector") and not pod.get("tolerations"), name
            assert container["image"] == IMAGE, name


def test_the_note_writing_steps_share_the_llm_pool(settings):
    defs = build_definitions(settings)
    pools = {name: defs.resolve_assets_def(name).op.pool for name in ("diary_notes", "daily_digest", "transcripts", "raw_audio")}
    assert pools == {"diary_notes": "llm", "daily_digest": "llm", "transcripts": "gpu", "raw_audio": None}
    assert "nvidia-l4" in str(defs.resolve_assets_def("transcripts").op.tags["dagster-k8s/config"]), "the default accelerator"
