"""Dagster resources: typed configuration around the domain services, one per concern.

Values come from `Settings` (build_resources); defaults live in the domain dataclasses, so the fields
here are the schema the UI shows, never a second copy of the defaults.
"""

from dataclasses import fields, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_gcp import GCSResource
from dagster_postgres.run_storage import PostgresRunStorage
from pydantic import PrivateAttr

from diary_platform.domain.costs import PlatformPrices, recording_costs, stored_bytes
from diary_platform.domain.ingest.batches import BatchStore
from diary_platform.domain.ingest.claims import Claims
from diary_platform.domain.ingest.landing import Intake
from diary_platform.domain.ingest.batching import BatchLimits
from diary_platform.domain.ingest.bucket import BucketScanner, ContentAliases
from diary_platform.domain.audio.sandbox import SandboxLimits, SandboxPool
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.notes.llm_config import load_router_config
from diary_platform.domain.notes.router import NoteRouter, RouterConfig
from diary_platform.domain.notes.spend import load_prices
from diary_platform.domain.shared_state import SharedState, open_shared_state
from diary_platform.domain.speech.guards import GuardConfig
from diary_platform.domain.models.assignment import ModelRouting
from diary_platform.domain.models.registry import ModelPromotions, Registry, load_registry
from diary_platform.domain.speech.policy import TranscriptionPolicy, load_policy
from diary_platform.domain.speech.transcription import TranscriberConfig
from diary_platform.domain.store.layout import DataStore
from diary_platform.domain.store.objects import open_objects
from diary_platform.domain.store.uploads import UploadSources
from diary_platform.settings import Settings


@lru_cache(maxsize=8)
def gcs_client(gcs_project: str):
    """One google-cloud-storage client per project and process."""
    return GCSResource(project=gcs_project or None).get_client()


@lru_cache(maxsize=8)
def _store(data_dir: str, storage_uri: str, gcs_project: str) -> DataStore:
    client = gcs_client(gcs_project) if storage_uri.startswith("gs://") else None
    return DataStore(data_dir, open_objects(storage_uri or data_dir, client), UploadSources(lambda: gcs_client(gcs_project)))


def open_store(settings: Settings) -> DataStore:
    """The one way to open the platform's store: one per configuration and process, one GCS client."""
    return _store(str(settings.data_dir), settings.storage_uri, settings.gcs_project)


def shared_state_url(explicit_url: str, instance: dg.DagsterInstance | None) -> str | None:
    """Where the shared state lives: DIARY_STATE_URL when set, else the database of a Postgres instance (every
    machine of the deployment reaches it), else nowhere but the data folder (None)."""
    if explicit_url:
        return explicit_url
    storage = instance.run_storage if instance is not None else None
    return storage.postgres_url if isinstance(storage, PostgresRunStorage) else None


def open_state(settings: Settings, instance: dg.DagsterInstance) -> SharedState:
    """The shared state of a process that holds an instance itself (the CLI's commands)."""
    return open_shared_state(settings.data_dir, shared_state_url(settings.state_url, instance))


class StoreResource(dg.ConfigurableResource):
    """Objects (originals, normalised audio, tables, transcript files, notes) in the data folder's tiers or
    under a gs:// prefix; batch manifests, claims, breakers and spend in the instance's Postgres when it
    has one (or at `state_url`), else in the data folder."""

    data_dir: str
    storage_uri: str
    gcs_project: str
    state_url: str
    _state_url: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._state_url = shared_state_url(self.state_url, context.instance)

    @property
    def store(self) -> DataStore:
        return _store(self.data_dir, self.storage_uri, self.gcs_project)

    @property
    def shared_state(self) -> SharedState:
        """Where setup found it; used outside a Dagster execution, only `state_url` is known."""
        return open_shared_state(Path(self.data_dir), self._state_url or self.state_url or None)

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.store)

    @property
    def batches(self) -> BatchStore:
        return self.shared_state.batches

    @property
    def claims(self) -> Claims:
        return self.shared_state.claims


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
    """faster-whisper settings and the transcription policy; each model is loaded once per process and
    shared by all steps there."""

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
    window_seconds: float
    packing: str
    cpu_threads: int
    policy_file: str | None = None
    registry_file: str | None = None

    def settings(self) -> TranscriberConfig:
        return TranscriberConfig(**self.model_dump(exclude={"policy_file", "registry_file"}))

    def policy(self) -> TranscriptionPolicy:
        """The configured settings, with the rules of the transcription policy file on top."""
        return load_policy(Path(self.policy_file) if self.policy_file else None, self.settings())

    def registry(self) -> Registry:
        """The model registry (DIARY_MODEL_REGISTRY) over these settings; without a file, they are the one model."""
        return load_registry(Path(self.registry_file) if self.registry_file else None, self.settings())

    def routing(self, promotions: ModelPromotions, now: datetime) -> ModelRouting:
        """Which model each recording gets now: the baseline in force, or an experiment's candidate."""
        return ModelRouting(self.registry(), promotions, now)


class NoteWriterResource(dg.ConfigurableResource):
    """The LLM router: the providers of the configuration file; without one, the local writer alone."""

    llm_config: str | None
    local_only: bool
    store: StoreResource

    def build(self) -> NoteRouter:
        config = self.router_config()
        if self.local_only:
            config = replace(config, local_only=True)
        return NoteRouter(config, self.store.shared_state)

    def router_config(self) -> RouterConfig:
        """The LLM configuration's limits (budgets among them); the defaults without a configuration file."""
        return load_router_config(Path(self.llm_config)) if self.llm_config else RouterConfig()


class BatchSizing(dg.ConfigurableResource):
    """When batches close (batching.py): at `work_seconds` x `transcribe_speed` seconds of estimated audio,
    or a cap; and how much one sensor tick may look at."""

    max_files: int
    max_bytes: int
    work_seconds: float
    transcribe_speed: float
    max_wait_seconds: float
    max_files_scanned: int
    max_bytes_hashed: int
    max_batches_per_tick: int

    def limits(self) -> BatchLimits:
        return BatchLimits(**self.model_dump(include={f.name for f in fields(BatchLimits)}))


class LandingFolder(BatchSizing):
    """The landing folder: `<landing_dir>/<user>/...`."""

    landing_dir: str

    @property
    def root(self) -> Path:
        return Path(self.landing_dir)


class LandingBucket(BatchSizing):
    """The landing bucket: `gs://bucket/prefix/<user>/...`, listed with one client per process."""

    landing_uri: str
    gcs_project: str

    def scanner(self, intake: Intake, data_dir: str) -> BucketScanner:
        aliases = ContentAliases(Path(data_dir) / "state" / "content_aliases")
        return BucketScanner(gcs_client(self.gcs_project), self.landing_uri, intake, aliases, self.limits())


class PlatformPricing(dg.ConfigurableResource):
    """Compute and storage prices and the daily budget (default: config/platform_prices.yaml), and what a
    recording, a batch or a day cost by them."""

    prices_file: str | None
    transcribes_on_gpu: bool = False

    def prices(self) -> PlatformPrices:
        return PlatformPrices.load(Path(self.prices_file).read_text() if self.prices_file else None)

    def costs(self, tables: dict[str, pl.DataFrame], store: DataStore) -> pl.DataFrame:
        """Per recording of `tables` (by asset name): compute, language models, storage (costs.py)."""
        return recording_costs(tables, stored_bytes(tables, store), self.prices(), load_prices(), self.transcribes_on_gpu)
