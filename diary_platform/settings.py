"""Configuration: defaults live in the domain dataclasses, overrides come from the environment, read here only.

`VARIABLES` is the one list of environment variables the platform reads, and where each value goes.
`Settings()` reads them once; everything else (the definitions, the CLI, the benchmarks) receives a
`Settings` and never looks at the environment itself. Keyword arguments override the environment
(`Settings(data_dir=...)` is what `diary run --data-dir` does).
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from diary_platform.domain.audio.sandbox import SandboxLimits
from diary_platform.domain.ingest.batching import GPU_BATCH_DEFAULTS, BatchLimits
from diary_platform.domain.ingest.recovery import RECOVERY_WINDOW
from diary_platform.domain.models.registry import load_registry
from diary_platform.domain.notes.llm_config import load_router_config
from diary_platform.domain.speech.guards import GuardConfig
from diary_platform.domain.speech.policy import TranscriptionPolicy, load_policy
from diary_platform.domain.speech.transcription import GPU_DEFAULTS, TranscriberConfig
from diary_platform.domain.store.tiering import TieringPolicy


class KubernetesSettings(BaseModel):
    """Where steps run when DIARY_ENVIRONMENT=k8s (see diary_platform/k8s.py)."""

    model_config = ConfigDict(frozen=True)

    namespace: str = "diary"
    gpu_accelerator: str = "nvidia-l4"
    gpu_image: str = ""
    service_account: str = "diary-platform"


class ApiSettings(BaseModel):
    """The HTTP API (`diary serve`, diary_platform/api/)."""

    model_config = ConfigDict(frozen=True)

    keys: SecretStr = SecretStr("")
    keys_file: Path | None = None
    redis_url: str = ""
    requests_per_minute: int = Field(120, ge=0)
    bytes_per_hour: int = Field(2 * 1024**3, ge=0)
    sync_max_bytes: int = Field(25 * 1024**2, gt=0)
    sync_max_seconds: float = Field(600.0, gt=0)
    allow_loopback_webhooks: bool = False
    public_url: str = ""


class PoolSlots(BaseModel):
    """Run slots of the instance's pools, set by `diary instance-setup`."""

    model_config = ConfigDict(frozen=True)

    gpu: int = 1
    llm: int = 4


def _language(value: str) -> str | None:
    return None if value == "auto" else value


# Environment variable -> (path of the setting, conversion of the text before validation).
VARIABLES: dict[str, tuple[tuple[str, ...], Callable[[str], Any] | None]] = {
    "DIARY_ENVIRONMENT": (("environment",), None),
    "DIARY_DATA_DIR": (("data_dir",), None),
    "DIARY_LANDING": (("landing_dir",), None),
    "DIARY_LANDING_URI": (("landing_uri",), None),
    "DAGSTER_HOME": (("dagster_home",), None),
    "DIARY_STORAGE_URI": (("storage_uri",), None),
    "DIARY_GCS_PROJECT": (("gcs_project",), None),
    "DIARY_STATE_URL": (("state_url",), None),
    "DIARY_WARM_AFTER_DAYS": (("tiering", "warm_after_days"), None),
    "DIARY_COLD_AFTER_DAYS": (("tiering", "cold_after_days"), None),
    "DIARY_DELETE_ORIGINALS_AFTER_DAYS": (("tiering", "delete_originals_after_days"), None),
    "DIARY_K8S_NAMESPACE": (("kubernetes", "namespace"), None),
    "DIARY_GPU_ACCELERATOR": (("kubernetes", "gpu_accelerator"), None),
    "DIARY_GPU_IMAGE": (("kubernetes", "gpu_image"), None),
    "DIARY_K8S_SERVICE_ACCOUNT": (("kubernetes", "service_account"), None),
    "DIARY_GPU_SLOTS": (("pool_slots", "gpu"), None),
    "DIARY_LLM_SLOTS": (("pool_slots", "llm"), None),
    "DIARY_MAX_FILE_BYTES": (("decode_limits", "max_file_bytes"), None),
    "DIARY_MAX_AUDIO_SECONDS": (("decode_limits", "max_decoded_seconds"), None),
    "DIARY_DECODE_TIMEOUT_SECONDS": (("decode_limits", "max_wall_seconds"), None),
    "DIARY_DECODE_MEMORY_BYTES": (("decode_limits", "max_memory_bytes"), None),
    "DIARY_DECODE_WORKERS": (("decode_limits", "workers"), None),
    "DIARY_BATCH_MAX_FILES": (("batch_limits", "max_files"), None),
    "DIARY_BATCH_MAX_BYTES": (("batch_limits", "max_bytes"), None),
    "DIARY_BATCH_WORK_SECONDS": (("batch_limits", "work_seconds"), None),
    "DIARY_TRANSCRIBE_SPEED": (("batch_limits", "transcribe_speed"), None),
    "DIARY_BATCH_MAX_WAIT_SECONDS": (("batch_limits", "max_wait_seconds"), None),
    "DIARY_LANDING_SCAN_LIMIT": (("batch_limits", "max_files_scanned"), None),
    "DIARY_PARTITION_RETENTION_DAYS": (("partition_retention_days",), None),
    "DIARY_MODEL": (("transcriber", "model"), None),
    "DIARY_DEVICE": (("transcriber", "device"), None),
    "DIARY_COMPUTE_TYPE": (("transcriber", "compute_type"), None),
    "DIARY_BEAM_SIZE": (("transcriber", "beam_size"), None),
    "DIARY_BATCHED": (("transcriber", "batched"), None),
    "DIARY_BATCH_SIZE": (("transcriber", "batch_size"), None),
    "DIARY_VAD": (("transcriber", "vad_filter"), None),
    "DIARY_LANGUAGE": (("transcriber", "language"), _language),
    "DIARY_WORD_TIMESTAMPS": (("transcriber", "word_timestamps"), None),
    "DIARY_TRANSCRIBE_WINDOW_SECONDS": (("transcriber", "window_seconds"), None),
    "DIARY_PACKING": (("transcriber", "packing"), None),
    "DIARY_TRANSCRIPTION_POLICY": (("transcription_policy",), None),
    "DIARY_MODEL_REGISTRY": (("model_registry",), None),
    "DIARY_HALLUCINATION_SILENCE_THRESHOLD": (("transcriber", "hallucination_silence_threshold"), None),
    "DIARY_CPU_THREADS": (("transcriber", "cpu_threads"), None),
    "DIARY_GUARD_COMPRESSION_RATIO": (("guards", "compression_ratio_threshold"), None),
    "DIARY_GUARD_LOG_PROB": (("guards", "log_prob_threshold"), None),
    "DIARY_GUARD_NO_SPEECH": (("guards", "no_speech_threshold"), None),
    "DIARY_GUARD_MAX_REPEATS": (("guards", "max_phrase_repeats"), None),
    "DIARY_LLM_CONFIG": (("llm_config",), None),
    "DIARY_LOCAL_ONLY": (("local_only",), None),
    "DIARY_PLATFORM_PRICES": (("platform_prices_file",), None),
    "DIARY_API_KEYS": (("api", "keys"), None),
    "DIARY_API_KEYS_FILE": (("api", "keys_file"), None),
    "DIARY_REDIS_URL": (("api", "redis_url"), None),
    "DIARY_API_REQUESTS_PER_MINUTE": (("api", "requests_per_minute"), None),
    "DIARY_API_BYTES_PER_HOUR": (("api", "bytes_per_hour"), None),
    "DIARY_API_SYNC_MAX_BYTES": (("api", "sync_max_bytes"), None),
    "DIARY_API_SYNC_MAX_SECONDS": (("api", "sync_max_seconds"), None),
    "DIARY_API_ALLOW_LOOPBACK_WEBHOOKS": (("api", "allow_loopback_webhooks"), None),
    "DIARY_API_PUBLIC_URL": (("api", "public_url"), None),
}


class ConfigurationError(ValueError):
    """A setting the environment (or a caller) gave has a value the platform cannot use."""


class _Variables(PydanticBaseSettingsSource):
    """The variables of `VARIABLES` that are set (and not blank), as nested settings."""

    def get_field_value(self, field, field_name):  # the whole mapping is built in __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, (path, convert) in VARIABLES.items():
            text = os.environ.get(name, "").strip()
            if not text:
                continue
            node = values
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = convert(text) if convert else text
        return values


def _variable_of(location: tuple) -> str:
    path = tuple(str(part) for part in location)
    for name, (variable_path, _) in VARIABLES.items():
        if path[: len(variable_path)] == variable_path:
            return name
    return ".".join(path)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    environment: Literal["local", "k8s"] = "local"
    data_dir: Path = Path("data")
    landing_dir: Path
    landing_uri: str = ""
    dagster_home: Path
    storage_uri: str = ""
    gcs_project: str = ""
    state_url: str = ""
    tiering: TieringPolicy = TieringPolicy()
    kubernetes: KubernetesSettings = KubernetesSettings()
    pool_slots: PoolSlots = PoolSlots()
    decode_limits: SandboxLimits = SandboxLimits()
    batch_limits: BatchLimits = BatchLimits()
    transcriber: TranscriberConfig = TranscriberConfig()
    guards: GuardConfig = GuardConfig()
    transcription_policy: Path | None = None
    model_registry: Path | None = None
    llm_config: Path | None = None
    local_only: bool = False
    platform_prices_file: Path | None = None
    api: ApiSettings = ApiSettings()
    # Days a batch's partition key and runs stay in Dagster; 0 keeps them all (batch/retention.py).
    partition_retention_days: int = Field(0, ge=0)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            problems = "; ".join(f"{_variable_of(e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in error.errors())
            raise ConfigurationError(f"invalid configuration: {problems}") from None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, _Variables(settings_cls))

    @field_validator("landing_uri")
    @classmethod
    def _landing_is_a_bucket(cls, uri: str) -> str:
        """Unset: the landing folder. Set: a bucket and an optional prefix, where the bucket sensor looks."""
        if uri and not (uri.startswith("gs://") and uri.removeprefix("gs://").split("/")[0]):
            raise ValueError("expected gs://bucket[/prefix]")
        return uri

    @field_validator("transcription_policy")
    @classmethod
    def _policy_is_usable(cls, path: Path | None) -> Path | None:
        """Like the LLM configuration: a bad policy file stops the definitions from loading."""
        load_policy(path, TranscriberConfig())
        return path

    def policy(self) -> TranscriptionPolicy:
        return load_policy(self.transcription_policy, self.transcriber)

    @field_validator("model_registry")
    @classmethod
    def _registry_is_usable(cls, path: Path | None) -> Path | None:
        """Like the policy: a bad registry file stops the definitions from loading."""
        load_registry(path, TranscriberConfig())
        return path

    @field_validator("partition_retention_days")
    @classmethod
    def _retention_outlasts_recovery(cls, days: int) -> int:
        """A batch recovery may still resume must keep its runs: they say whether it is done."""
        if 0 < days <= RECOVERY_WINDOW.days:
            raise ValueError(f"keep batches longer than recovery's window of {RECOVERY_WINDOW.days} days, or 0 to keep them all")
        return days

    @field_validator("llm_config")
    @classmethod
    def _llm_config_is_usable(cls, path: Path | None) -> Path | None:
        """The whole file is checked now, so a bad one stops the definitions from loading, not the notes later."""
        if path is not None:
            load_router_config(path)
        return path

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Folders inside the data folder unless set; the GPU transcription and batch defaults in the k8s environment."""
        values = dict(values)
        data_dir = Path(values.get("data_dir") or "data").expanduser().resolve()
        values["data_dir"] = data_dir
        values["landing_dir"] = Path(values.get("landing_dir") or data_dir / "landing").expanduser().resolve()
        values["dagster_home"] = Path(values.get("dagster_home") or data_dir / "dagster_home").expanduser().resolve()
        if values.get("environment") == "k8s" and not isinstance(values.get("transcriber"), TranscriberConfig):
            values["transcriber"] = {**GPU_DEFAULTS, **(values.get("transcriber") or {})}
        if values.get("environment") == "k8s" and not isinstance(values.get("batch_limits"), BatchLimits):
            values["batch_limits"] = {**GPU_BATCH_DEFAULTS, **(values.get("batch_limits") or {})}
        return values
