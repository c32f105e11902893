"""Configuration from the environment: the one place that knows every DIARY_* variable and its default.

Plain Python (no Dagster), so the CLI, the definitions and the benchmarks read the same values.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from diary_platform.domain.audio import DEFAULT_MAX_DECODED_SECONDS
from diary_platform.domain.landing import BatchLimits
from diary_platform.domain.transcription import TranscriberConfig


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _flag(name: str, default: bool) -> bool:
    return _env(name, str(default)).lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    landing_dir: Path
    max_audio_seconds: float
    batch_limits: BatchLimits
    transcriber: TranscriberConfig
    note_writer: str

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
        return cls(
            data_dir=data_dir,
            landing_dir=Path(_env("DIARY_LANDING", str(data_dir / "landing"))).expanduser().resolve(),
            max_audio_seconds=float(_env("DIARY_MAX_AUDIO_SECONDS", str(DEFAULT_MAX_DECODED_SECONDS))),
            batch_limits=BatchLimits(
                max_files=int(_env("DIARY_BATCH_MAX_FILES", "16")),
                max_bytes=int(_env("DIARY_BATCH_MAX_BYTES", str(512 * 1024 * 1024))),
                max_wait_seconds=float(_env("DIARY_BATCH_MAX_WAIT_SECONDS", "30")),
            ),
            transcriber=TranscriberConfig(
                model=_env("DIARY_MODEL", "bundled"),
                device=_env("DIARY_DEVICE", "cpu"),
                compute_type=_env("DIARY_COMPUTE_TYPE", "int8"),
                beam_size=int(_env("DIARY_BEAM_SIZE", "5")),
                batched=_flag("DIARY_BATCHED", False),
                batch_size=int(_env("DIARY_BATCH_SIZE", "8")),
                vad_filter=_flag("DIARY_VAD", True),
                language=None if language == "auto" else language,
                word_timestamps=_flag("DIARY_WORD_TIMESTAMPS", False),
                cpu_threads=int(_env("DIARY_CPU_THREADS", "0")),
            ),
            note_writer=_env("DIARY_NOTE_WRITER", "local"),
        )
