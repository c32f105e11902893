"""When a batch closes, shared by every maker of batches (the landing folder, the bucket, the CLI).

A batch is sized by the work it gives the transcription step: it closes when its estimated audio reaches
`work_seconds x transcribe_speed` (long enough to pay for pod start-up and model load, short enough to
bound what a pre-emption loses), when it holds `max_files` or `max_bytes` (safety caps), when its oldest
upload has waited `max_wait_seconds`, or at once when nothing else is arriving. An upload bigger than
any limit is a batch of its own; a batch is never empty.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from diary_platform.domain.ingest.audio_estimate import estimate_from_size
from diary_platform.domain.ingest.batches import BatchItem, BatchManifest
from diary_platform.domain.ingest.claims import LandingFileKey

if TYPE_CHECKING:
    from diary_platform.domain.ingest.landing import Intake

T = TypeVar("T")

# Assumed, not measured here: large-v3-turbo float16, batched, on one L4 (docs/capacity.md).
GPU_BATCH_DEFAULTS = {"transcribe_speed": 50.0}


@dataclass(frozen=True)
class BatchLimits:
    max_files: int = 256
    max_bytes: int = 512 * 1024 * 1024
    work_seconds: float = 600.0
    transcribe_speed: float = 11.0  # audio seconds per second of work: measured, tiny.en int8 on 2 vCPUs
    max_wait_seconds: float = 30.0
    max_files_scanned: int = 5000
    max_bytes_hashed: int = 1024 * 1024 * 1024
    max_batches_per_tick: int = 64

    @property
    def target_audio_seconds(self) -> float:
        return self.work_seconds * self.transcribe_speed


def audio_seconds_of(item: BatchItem) -> float:
    """The item's recorded estimate; items written before estimates existed are estimated from their size."""
    if item.estimated_audio_seconds is not None:
        return item.estimated_audio_seconds
    return estimate_from_size(item.relative_path, item.size)


def take_chunk(queue: Iterable[T], limits: BatchLimits, item_of: Callable[[T], BatchItem]) -> Iterator[T]:
    """The longest prefix within the file, byte and audio limits, and never an empty batch."""
    count = 0
    total_bytes = 0
    total_audio = 0.0
    for entry in queue:
        item = item_of(entry)
        audio = audio_seconds_of(item)
        over = count >= limits.max_files or total_bytes + item.size > limits.max_bytes or total_audio + audio > limits.target_audio_seconds
        if count and over:
            return
        count += 1
        total_bytes += item.size
        total_audio += audio
        yield entry


def is_full(items: list[BatchItem], limits: BatchLimits) -> bool:
    return (
        len(items) >= limits.max_files
        or sum(i.size for i in items) >= limits.max_bytes
        or sum(audio_seconds_of(i) for i in items) >= limits.target_audio_seconds
    )


@dataclass(frozen=True)
class Waiting:
    """A hashed upload waiting for its batch to close, and since when (ISO time)."""

    item: BatchItem
    ready_at: str

    def to_dict(self) -> dict:
        return {**asdict(self.item), "ready_at": self.ready_at}

    @classmethod
    def from_dict(cls, raw: dict) -> "Waiting":
        return cls(BatchItem(**{k: v for k, v in raw.items() if k != "ready_at"}), raw["ready_at"])


class Arrivals:
    """Uploads waiting for a batch; content that a batch holds, or that already waits, is a duplicate:
    its upload is marked taken (with the batch that holds it) and goes no further."""

    def __init__(self, intake: "Intake", waiting: list[Waiting]):
        self.intake = intake
        self.waiting = list(waiting)
        self.hashes = {w.item.content_sha256 for w in waiting}
        self.duplicates = 0

    def offer_all(self, offers: list[tuple[BatchItem, LandingFileKey]], now: datetime) -> None:
        """Queue each (item, its upload) in order, with one lookup of who holds their contents."""
        holders = self.intake.holders([item.content_sha256 for item, _ in offers])
        duplicates = []
        for item, key in offers:
            holder = holders.get(item.content_sha256)
            if holder is not None or item.content_sha256 in self.hashes:
                duplicates.append((key, item.content_sha256, holder[0] if holder else None))
                continue
            self.hashes.add(item.content_sha256)
            self.waiting.append(Waiting(item, now.isoformat()))
        self.duplicates += len(duplicates)
        self.intake.claims.mark_files_taken(duplicates)


def close_batches(
    intake: "Intake",
    limits: BatchLimits,
    waiting: list[Waiting],
    now: datetime,
    idle: bool,
    file_key: Callable[[BatchItem], LandingFileKey],
) -> tuple[list[BatchManifest], list[Waiting]]:
    """Full batches; then, when nothing else is arriving (`idle`) or the oldest upload has waited
    `max_wait_seconds`, what is left too. `file_key` names each item's upload for the claims."""
    closed: list[BatchManifest] = []
    queue = sorted(waiting, key=lambda w: w.ready_at)
    while queue and len(closed) < limits.max_batches_per_tick:
        oldest_wait = now - datetime.fromisoformat(queue[0].ready_at)
        full = is_full([w.item for w in queue], limits)
        if not full and not idle and oldest_wait < timedelta(seconds=limits.max_wait_seconds):
            break
        chunk = list(take_chunk(queue, limits, item_of=lambda w: w.item))
        queue = queue[len(chunk) :]
        items = [w.item for w in chunk]
        manifest = intake.commit(items, now, {i.source_path: file_key(i) for i in items})
        if manifest is not None:
            closed.append(manifest)
    return closed, queue
