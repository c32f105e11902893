"""Dagster resources: typed configuration around the domain services, one per concern."""

from collections.abc import Callable
from functools import lru_cache
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
from dagster_gcp import GCSResource

from diary_platform.domain.ingest.batches import BatchStore
from diary_platform.domain.costs import PlatformPrices
from diary_platform.domain.speech.guards import GuardConfig
from diary_platform.domain.ingest.landing import BatchLimits, LandingScanner
from diary_platform.domain.ingest.claims import Claims
from diary_platform.domain.notes.local import LocalNoteWriter
from diary_platform.domain.notes.note import NoteWriter
from diary_platform.domain.notes.router import NoteRouter, RouterConfig
from diary_platform.domain.audio.sandbox import SandboxLimits, SandboxPool
from diary_platform.domain.store.layout import DataStore
from diary_platform.domain.speech.transcription import Transcriber, TranscriberConfig
from diary_platform.settings import Settings


class DiaryStorage(dg.ConfigurableResource):
    """Objects (originals, normalised audio, tables, transcript files, notes) in the data folder's tiers or
    under a gs:// prefix; manifests and the claims in the data folder."""

    data_dir: str
    storage_uri: str = ""
    gcs_project: str = ""

    @property
    def store(self) -> DataStore:
        return _data_store(self.data_dir, self.storage_uri, self.gcs_project)

    @property
    def bucket_name(self) -> str | None:
        return urlparse(self.storage_uri).netloc if self.storage_uri.startswith("gs://") else None

    def gcs(self) -> GCSResource:
        """dagster-gcp's client resource: uploads with preconditions and checksums, bucket lifecycle rules."""
        return GCSResource(project=self.gcs_project or None)

    @property
    def batches(self) -> BatchStore:
        return BatchStore(self.store.batches_root)

    @property
    def claims(self) -> Claims:
        return Claims(self.store.claims_root)


@lru_cache(maxsize=8)
def _data_store(data_dir: str, storage_uri: str, gcs_project: str) -> DataStore:
    """One store (and one set of Cloud Storage clients) per configuration and process."""
    client = GCSResource(project=gcs_project or None).get_client() if storage_uri.startswith("gs://") else None
    return DataStore.open(data_dir, storage_uri, gcs_project or None, gcs_client=client)


class DecodeLimits(dg.ConfigurableResource):
    """Limits the decode sandbox enforces on every upload (raise one and re-drive the quarantine)."""

    max_file_bytes: int
    max_decoded_seconds: float
    max_wall_seconds: float
    max_memory_bytes: int
    workers: int

    def sandboxes(self) -> SandboxPool:
        return SandboxPool(SandboxLimits(**self.model_dump()))


class TranscriptGuards(dg.ConfigurableResource):
    compression_ratio_threshold: float
    log_prob_threshold: float
    no_speech_threshold: float
    max_phrase_repeats: int
    max_phrase_words: int

    def config(self) -> GuardConfig:
        return GuardConfig(**self.model_dump())


class WhisperTranscriber(dg.ConfigurableResource):
    """faster-whisper settings; the model itself is loaded once per process and shared by all steps there."""

    model: str
    device: str
    compute_type: str
    beam_size: int
    batched: bool
    batch_size: int
    vad_filter: bool
    language: str | None
    word_timestamps: bool
    hallucination_silence_threshold: float | None
    cpu_threads: int

    @classmethod
    def from_config(cls, config: TranscriberConfig) -> "WhisperTranscriber":
        return cls(**vars(config))

    def transcriber(self) -> Transcriber:
        return Transcriber(TranscriberConfig(**self.model_dump()))


class NoteWriterResource(dg.ConfigurableResource):
    """The local writer, or the LLM router when a provider configuration file is given."""

    llm_config: str = ""
    local_only: bool = False
    state_dir: str

    def build(self) -> NoteWriter:
        if not self.llm_config:
            return LocalNoteWriter()
        config = RouterConfig.from_yaml(Path(self.llm_config).read_text())
        if self.local_only:
            config = replace(config, local_only=True)
        return NoteRouter(config, Path(self.state_dir))


class PlatformPricing(dg.ConfigurableResource):
    """Compute and storage prices and the daily budget for the cost report (default: config/platform_prices.yaml)."""

    prices_file: str = ""

    def prices(self) -> PlatformPrices:
        return PlatformPrices.load(Path(self.prices_file).read_text() if self.prices_file else None)


class LandingFolder(dg.ConfigurableResource):
    landing_dir: str
    max_files: int
    max_bytes: int
    max_wait_seconds: float

    def scanner(self, storage: DiaryStorage, is_emitted: Callable[[str], bool]) -> LandingScanner:
        limits = BatchLimits(
            max_files=self.max_files, max_bytes=self.max_bytes, max_wait_seconds=self.max_wait_seconds
        )
        return LandingScanner(Path(self.landing_dir), storage.batches, storage.claims, limits, is_emitted)


def build_resources(settings: Settings) -> dict[str, object]:
    from diary_platform.assets.storage_tiers import TieringPolicyResource
    from diary_platform.io_manager import ParquetIOManager

    limits = settings.batch_limits
    storage = DiaryStorage(
        data_dir=str(settings.data_dir), storage_uri=settings.storage_uri, gcs_project=settings.gcs_project
    )
    return {
        "storage": storage,
        "io_manager": ParquetIOManager(storage=storage),
        "decode_limits": DecodeLimits(**vars(settings.decode_limits)),
        "whisper": WhisperTranscriber.from_config(settings.transcriber),
        "guards": TranscriptGuards(**vars(settings.guards)),
        "note_writer": NoteWriterResource(
            llm_config=settings.llm_config, local_only=settings.local_only, state_dir=str(settings.data_dir / "state")
        ),
        "tiering": TieringPolicyResource(**vars(settings.tiering)),
        "pricing": PlatformPricing(prices_file=settings.platform_prices_file),
        "landing": LandingFolder(
            landing_dir=str(settings.landing_dir),
            max_files=limits.max_files,
            max_bytes=limits.max_bytes,
            max_wait_seconds=limits.max_wait_seconds,
        ),
    }
