"""Where steps run in the `k8s` environment: the executor, and what each step's pod asks for.

Each step runs in its own Kubernetes Job (dagster-k8s's `k8s_job_executor`). The tags below are
read only by that executor: locally they are inert. Transcription and the model evaluation ask for one
GPU on a node of the configured accelerator and tolerate the taint GKE puts on GPU nodes; every other
step asks for CPU and memory only, so it never lands on (or holds up) a GPU node.
"""

import dagster as dg
from dagster_k8s import k8s_job_executor

from diary_platform.domain import catalog
from diary_platform.domain.models.drift import TRANSCRIPT_QUALITY
from diary_platform.domain.models.evaluation import MODEL_EVALUATION
from diary_platform.domain.models.note_quality import NOTE_QUALITY
from diary_platform.settings import KubernetesSettings, Settings

K8S_CONFIG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def cpu_step(cpu: str, memory: str) -> dict[str, dict]:
    """Requests for a CPU step; memory limit = request, so a step is never killed for what it asked for."""
    return {
        K8S_CONFIG: {
            "container_config": {"resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}}
        }
    }


def gpu_step(cluster: KubernetesSettings, cpu: str = "4", memory: str = "16Gi") -> dict[str, dict]:
    """One GPU of the configured accelerator; the GPU image when one is set (CUDA, cuDNN, a larger model)."""
    container: dict = {
        "resources": {
            "requests": {"cpu": cpu, "memory": memory, GPU_RESOURCE: "1"},
            "limits": {"memory": memory, GPU_RESOURCE: "1"},
        }
    }
    if cluster.gpu_image:
        container["image"] = cluster.gpu_image
    return {
        K8S_CONFIG: {
            "container_config": container,
            "pod_spec_config": {
                "node_selector": {GPU_NODE_LABEL: cluster.gpu_accelerator},
                "tolerations": [GPU_TOLERATION],
            },
        }
    }


# Sized from what each step holds in memory: the decode sandbox runs DIARY_DECODE_WORKERS workers of
# up to DIARY_DECODE_MEMORY_BYTES each; notes and digests mostly wait on the network.
CPU_STEPS = {
    catalog.RAW_AUDIO: cpu_step("500m", "1Gi"),
    catalog.VALIDATED_AUDIO: cpu_step("2", "6Gi"),
    catalog.DIARY_NOTES: cpu_step("500m", "1Gi"),
    catalog.DAILY_DIGEST: cpu_step("500m", "1Gi"),
    catalog.COST_REPORT: cpu_step("250m", "1Gi"),
    catalog.STORAGE_TIERS: cpu_step("250m", "1Gi"),
    TRANSCRIPT_QUALITY: cpu_step("500m", "2Gi"),  # eight days of transcripts and validated_audio tables
    NOTE_QUALITY: cpu_step("500m", "1Gi"),
}


# Steps that run the transcription models: the model evaluation measures them where the platform runs them.
GPU_STEPS = (catalog.TRANSCRIPTS, MODEL_EVALUATION)


def step_tags(settings: Settings, asset_name: str) -> dict[str, dict]:
    if asset_name in GPU_STEPS:
        return gpu_step(settings.kubernetes)
    return CPU_STEPS[asset_name]


def executor_config(cluster: KubernetesSettings) -> dict:
    """Step Jobs go to the platform's namespace under its (workload identity) service account; a step
    without tags of its own gets a small CPU request."""
    return {
        "job_namespace": cluster.namespace,
        "service_account_name": cluster.service_account,
        "step_k8s_config": cpu_step("500m", "1Gi")[K8S_CONFIG],
    }


def executor(settings: Settings) -> dg.ExecutorDefinition:
    """The k8s_job_executor in the `k8s` environment. Locally every step of a run runs in the run's own
    process: a batch's steps depend on each other, so separate step processes would buy no parallelism and
    cost each step a process start, the imports and a model load (most of a lone recording's latency)."""
    if settings.environment != "k8s":
        return dg.in_process_executor
    return k8s_job_executor.configured(executor_config(settings.kubernetes), name="k8s_job_executor")
