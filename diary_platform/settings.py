"""Configuration from the environment: the one place that knows every DIARY_* variable and its default.

Plain Python (no Dagster), so the CLI, the definitions and the benchmarks read the same values.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from diary_platform.domain.audio.decode import DEFAULT_MAX_DECODED_SECONDS
from diary_platform.domain.speech.guards import GuardConfig
from diary_platform.domain.ingest.landing import BatchLimits
from diary_platform.domain.audio.sandbox import SandboxLimits
from diary_platform.domain.store.layout import DataStore
from diary_platform.domain.store.tiering import TieringPolicy
from diary_platform.domain.speech.transcription import TranscriberConfig


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _flag(name: str, default: bool) -> bool:
    return _env(name, str(default)).lower() in {"1", "true", "yes", "on"}


def _optional_float(name: str) -> float | None:
    value = _env(name, "")
    return float(value) if value else None


def _optional_int(name: str) -> int | None:
    value = _env(name, "")
    return int(value) if value else None


ENVIRONMENTS = ("local", "k8s")


@dataclass(frozen=True)
class KubernetesSettings:
    """Where steps run when DIARY_ENVIRONMENT=k8s (see diary_platform/k8s.py)."""

    namespace: str
    gpu_accelerator: str
    gpu_image: str
    service_account: str


@dataclass(frozen=True)
class Settings:
    environment: str
    kubernetes: KubernetesSettings
    data_dir: Path
    storage_uri: str
    gcs_project: str
    tiering: TieringPolicy
    landing_dir: Path
    decode_limits: SandboxLimits
    batch_limits: BatchLimits
    transcriber: TranscriberConfig
    guards: GuardConfig
    llm_config: str
    platform_prices_file: str
    local_only: bool
    pool_slots: dict[str, int]

    def data_store(self) -> DataStore:
        """Objects in the data folder's tiers, or under DIARY_STORAGE_URI; control state in the data folder."""
        return DataStore.open(self.data_dir, self.storage_uri, self.gcs_project or None)

    @property
    def dagster_home(self) -> Path:
        """$DAGSTER_HOME, by default a folder in the data folder; set in the environment for Dagster to find."""
        home = Path(os.environ.setdefault("DAGSTER_HOME", str(self.data_dir / "dagster_home")))
        home.mkdir(parents=True, exist_ok=True)
        return home

    @classmethod
    def from_env(cls) -> "Settings":
        data_dir = Path(_env("DIARY_DATA_DIR", "data")).expanduser().resolve()
        language = _env("DIARY_LANGUAGE", "en")
        environment = _env("DIARY_ENVIRONMENT", "local")
        if environment not in ENVIRONMENTS:
            raise ValueError(f"DIARY_ENVIRONMENT must be one of {ENVIRONMENTS}, not {environment!r}")
        on_gpu = environment == "k8s"
        return cls(
            environment=environment,
            kubernetes=KubernetesSettings(
                namespace=_env("DIARY_K8S_NAMESPACE", "diary"),
                gpu_accelerator=_env("DIARY_GPU_ACCELERATOR", "nvidia-l4"),
                gpu_image=_env("DIARY_GPU_IMAGE", ""),
                service_account=_env("DIARY_K8S_SERVICE_ACCOUNT", "diary-platform"),
            ),
            data_dir=data_dir,
            storage_uri=_env("DIARY_STORAGE_URI", ""),
            gcs_project=_env("DIARY_GCS_PROJECT", ""),
            tiering=TieringPolicy(
                warm_after_days=int(_env("DIARY_WARM_AFTER_DAYS", "30")),
                cold_after_days=int(_env("DIARY_COLD_AFTER_DAYS", "180")),
                delete_originals_after_days=_optional_int("DIARY_DELETE_ORIGINALS_AFTER_DAYS"),
            ),
            landing_dir=Path(_env("DIARY_LANDING", str(data_dir / "landing"))).expanduser().resolve(),
            decode_limits=SandboxLimits(
                max_file_bytes=int(_env("DIARY_MAX_FILE_BYTES", str(500 * 1024 * 1024))),
                max_decoded_seconds=float(_env("DIARY_MAX_AUDIO_SECONDS", str(DEFAULT_MAX_DECODED_SECONDS))),
                max_wall_seconds=float(_env("DIARY_DECODE_TIMEOUT_SECONDS", "600")),
                max_memory_bytes=int(_env("DIARY_DECODE_MEMORY_BYTES", str(2 * 1024 * 1024 * 1024))),
                workers=int(_env("DIARY_DECODE_WORKERS", "2")),
            ),
            batch_limits=BatchLimits(
                max_files=int(_env("DIARY_BATCH_MAX_FILES", "16")),
                max_bytes=int(_env("DIARY_BATCH_MAX_BYTES", str(512 * 1024 * 1024))),
                max_wait_seconds=float(_env("DIARY_BATCH_MAX_WAIT_SECONDS", "30")),
            ),
            transcriber=TranscriberConfig(
                model=_env("DIARY_MODEL", "bundled"),
                device=_env("DIARY_DEVICE", "cuda" if on_gpu else "cpu"),
                compute_type=_env("DIARY_COMPUTE_TYPE", "float16" if on_gpu else "int8"),
                beam_size=int(_env("DIARY_BEAM_SIZE", "5")),
                batched=_flag("DIARY_BATCHED", on_gpu),
                batch_size=int(_env("DIARY_BATCH_SIZE", "16" if on_gpu else "8")),
                vad_filter=_flag("DIARY_VAD", True),
                language=None if language == "auto" else language,
                word_timestamps=_flag("DIARY_WORD_TIMESTAMPS", False),
                hallucination_silence_threshold=_optional_float("DIARY_HALLUCINATION_SILENCE_THRESHOLD"),
                cpu_threads=int(_env("DIARY_CPU_THREADS", "0")),
            ),
            guards=GuardConfig(
                compression_ratio_threshold=float(_env("DIARY_GUARD_COMPRESSION_RATIO", "2.4")),
                log_prob_threshold=float(_env("DIARY_GUARD_LOG_PROB", "-1.0")),
                no_speech_threshold=float(_env("DIARY_GUARD_NO_SPEECH", "0.6")),
                max_phrase_repeats=int(_env("DIARY_GUARD_MAX_REPEATS", "3")),
            ),
            llm_config=_env("DIARY_LLM_CONFIG", ""),
            platform_prices_file=_env("DIARY_PLATFORM_PRICES", ""),
            local_only=_flag("DIARY_LOCAL_ONLY", False),
            pool_slots={
                "gpu": int(_env("DIARY_GPU_SLOTS", "1")),
                "llm": int(_env("DIARY_LLM_SLOTS", "4")),
            },
        )
