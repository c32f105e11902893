"""The control state every process of a deployment shares: batch manifests with their leases and give-ups,
claims, the LLM breakers, the daily spend, the provider batches of notes that wait, the
API's uploads, its webhook deliveries and the model promotions.

`open_shared_state` is the one place that picks where it lives: files in the data folder (one machine, no
server: `batches/`, `claims/`, `state/breakers/`, `state/spend/`), or, given a database URL, tables in
Postgres that several machines share (state_database.py). Both backends keep the same interfaces and
guarantees; the Dagster wiring (resources.py) decides which URL, if any.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pybreaker

from diary_platform.domain.ingest.api_uploads import ApiUploads, FileApiUploads, PostgresApiUploads
from diary_platform.domain.ingest.batches import BatchStore, FileBatchStore, PostgresBatchStore
from diary_platform.domain.ingest.claims import Claims, FileClaims, PostgresClaims
from diary_platform.domain.models.registry import FileModelPromotions, ModelPromotions, PostgresModelPromotions
from diary_platform.domain.notes.breakers import FileBreakerStorage, PostgresBreakerStorage
from diary_platform.domain.notes.note_batches import FileNoteBatches, NoteBatches, PostgresNoteBatches
from diary_platform.domain.notes.spend import DailySpend, FileDailySpend, PostgresDailySpend
from diary_platform.domain.state_database import state_database
from diary_platform.domain.webhooks import FileWebhookDeliveries, PostgresWebhookDeliveries, WebhookDeliveries


@dataclass(frozen=True)
class SharedState:
    """The state's parts on one backend; `location` says where (a folder, or the database without password)."""

    batches: BatchStore
    claims: Claims
    spend: DailySpend
    note_batches: NoteBatches
    api_uploads: ApiUploads
    webhook_deliveries: WebhookDeliveries
    model_promotions: ModelPromotions
    breaker_storage: Callable[[str], pybreaker.CircuitBreakerStorage]  # by provider name
    location: str


def open_shared_state(data_dir: Path, database_url: str | None = None) -> SharedState:
    """The state in Postgres at `database_url` (its schema migrated on first use), else in `data_dir`."""
    if database_url:
        database = state_database(database_url)
        return SharedState(
            PostgresBatchStore(database), PostgresClaims(database), PostgresDailySpend(database), PostgresNoteBatches(database),
            PostgresApiUploads(database), PostgresWebhookDeliveries(database), PostgresModelPromotions(database),
            lambda provider: PostgresBreakerStorage(database, provider), database.location,
        )
    root = Path(data_dir)
    return SharedState(
        FileBatchStore(root / "batches"), FileClaims(root / "claims"), FileDailySpend(root / "state"), FileNoteBatches(root / "state" / "note_batches"),
        FileApiUploads(root / "state" / "api_uploads"), FileWebhookDeliveries(root / "state" / "webhooks"),
        FileModelPromotions(root / "state" / "model_promotions"),
        lambda provider: FileBreakerStorage(root / "state" / "breakers" / f"{provider}.json"), str(root),
    )
