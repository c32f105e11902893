"""The one `Definitions` object, built from `Settings`: the slices (batch, daily, storage tiers, models), the shared
resources and the executor the environment picks. Nothing here reads the environment at import."""

from dataclasses import asdict

import dagster as dg

from diary_platform import batch, daily, models, storage_tiers
from diary_platform.io_manager import ParquetIOManager
from diary_platform.k8s import executor
from diary_platform.resources import (
    DecodeLimits,
    LandingBucket,
    LandingFolder,
    NoteWriterResource,
    PlatformPricing,
    StoreResource,
    TranscriptGuards,
    WhisperTranscriber,
)
from diary_platform.settings import Settings


def _text(path) -> str | None:
    return str(path) if path else None


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources every slice shares, configured from `settings`; the landing bucket only when one is set."""
    store = StoreResource(
        data_dir=str(settings.data_dir), storage_uri=settings.storage_uri, gcs_project=settings.gcs_project, state_url=settings.state_url
    )
    bucket = (
        {"landing_bucket": LandingBucket(landing_uri=settings.landing_uri, gcs_project=settings.gcs_project, **asdict(settings.batch_limits))}
        if settings.landing_uri
        else {}
    )
    return {
        "store": store,
        "io_manager": ParquetIOManager(store=store),
        "decode_limits": DecodeLimits(**asdict(settings.decode_limits)),
        "whisper": WhisperTranscriber(**asdict(settings.transcriber), policy_file=_text(settings.transcription_policy),
                                      registry_file=_text(settings.model_registry)),
        "guards": TranscriptGuards(**asdict(settings.guards)),
        "note_writer": NoteWriterResource(llm_config=_text(settings.llm_config), local_only=settings.local_only, store=store),
        "landing": LandingFolder(landing_dir=str(settings.landing_dir), **asdict(settings.batch_limits)),
        **bucket,
        "pricing": PlatformPricing(
            prices_file=_text(settings.platform_prices_file), transcribes_on_gpu=settings.transcriber.device.startswith("cuda")
        ),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(
        batch.definitions(settings),
        daily.definitions(settings),
        storage_tiers.definitions(settings),
        models.definitions(settings),
        dg.Definitions(resources=build_resources(settings), executor=executor(settings)),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev`, `dg`, workspace.yaml and dagster_cloud.yaml load: settings read once, here."""
    return build_definitions(Settings())
