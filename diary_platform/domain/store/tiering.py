"""Moving old objects to cheaper tiers, deleting old originals when asked, and reporting where data is.

Locally the platform moves files hot → warm → cold by age. On GCS the bucket's lifecycle rules change
storage classes (see terraform/), so the same job only reads where each object now is. Retention of
originals is off unless configured; every deletion is recorded in the store before it happens.
"""

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import polars as pl

from diary_platform.domain.store.objects import TIERS, ObjectStore, StoredObject
from diary_platform.domain.store.layout import asset_of

RETENTION_RECORDS = "records/retention"
ORIGINALS = "audio/original/"


@dataclass(frozen=True)
class TieringPolicy:
    warm_after_days: int = 30
    cold_after_days: int = 180
    delete_originals_after_days: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.warm_after_days <= self.cold_after_days:
            raise ValueError("tiering needs 0 <= warm_after_days <= cold_after_days")

    def tier_for(self, age: timedelta) -> str:
        if age >= timedelta(days=self.cold_after_days):
            return "cold"
        if age >= timedelta(days=self.warm_after_days):
            return "warm"
        return "hot"


@dataclass(frozen=True)
class Move:
    key: str
    from_tier: str
    to_tier: str
    size: int


@dataclass(frozen=True)
class Deletion:
    key: str
    uri: str
    tier: str
    size: int
    modified: str
    reason: str


@dataclass
class TieringOutcome:
    moves: list[Move] = field(default_factory=list)
    deletions: list[Deletion] = field(default_factory=list)
    record_key: str | None = None
    temporaries_removed: int = 0
    objects: list[StoredObject] = field(default_factory=list)


def _colder(tier: str, than: str) -> bool:
    return TIERS.index(tier) > TIERS.index(than)


def apply_tiering(store: ObjectStore, policy: TieringPolicy, now: datetime, dry_run: bool = False) -> TieringOutcome:
    """One pass: retention first (so nothing is moved only to be deleted), then moves, then a fresh listing."""
    outcome = TieringOutcome()
    objects = [o for o in store.scan() if not o.key.startswith(RETENTION_RECORDS)]
    if policy.delete_originals_after_days is not None:
        cutoff = now - timedelta(days=policy.delete_originals_after_days)
        outcome.deletions = [
            Deletion(o.key, o.uri, o.tier, o.size, o.modified.isoformat(), f"original older than {policy.delete_originals_after_days} days")
            for o in objects
            if o.key.startswith(ORIGINALS) and o.modified < cutoff
        ]
    if outcome.deletions and not dry_run:
        outcome.record_key = f"{RETENTION_RECORDS}/{now.strftime('%Y%m%dT%H%M%S')}.json"
        record = {"at": now.isoformat(), "policy": asdict(policy), "deleted": [asdict(d) for d in outcome.deletions]}
        store.write_bytes(outcome.record_key, json.dumps(record, indent=2).encode("utf-8"))
        for deletion in outcome.deletions:
            store.delete(deletion.key)
    deleted = {d.key for d in outcome.deletions}
    if store.moves_tiers:
        for stored in objects:
            target = policy.tier_for(now - stored.modified)
            if stored.key not in deleted and _colder(target, stored.tier):
                outcome.moves.append(Move(stored.key, stored.tier, target, stored.size))
                if not dry_run:
                    store.move(stored.key, target)
    if not dry_run:
        outcome.temporaries_removed = store.remove_stale_temporaries(now - timedelta(days=1))
    outcome.objects = list(store.scan())
    return outcome


def storage_report(objects: list[StoredObject]) -> pl.DataFrame:
    """Objects and bytes per asset and tier, every tier listed for every asset (zeros included)."""
    counted = pl.DataFrame(
        {"asset": [asset_of(o.key) for o in objects], "tier": [o.tier for o in objects], "bytes": [o.size for o in objects]},
        schema={"asset": pl.Utf8, "tier": pl.Utf8, "bytes": pl.Int64},
    )
    grid = pl.DataFrame({"asset": sorted(set(counted["asset"]))}).join(pl.DataFrame({"tier": list(TIERS)}), how="cross")
    totals = counted.group_by("asset", "tier").agg(pl.len().cast(pl.Int64).alias("objects"), pl.col("bytes").sum())
    report = grid.join(totals, on=["asset", "tier"], how="left").fill_null(0)
    order = {tier: index for index, tier in enumerate(TIERS)}
    return report.with_columns(pl.col("tier").replace_strict(order).alias("_order")).sort("asset", "_order").drop("_order")
