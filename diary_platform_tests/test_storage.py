"""Local tiered storage: atomic writes, a killed writer, content addressing, tiering by age, retention, retried faults."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from diary_platform import batch
from diary_platform.domain.store.objects import LocalTieredStore, atomic_writer
from diary_platform.domain.store.layout import ContentChanged, DataStore
from diary_platform.domain.store.tiering import TieringPolicy, apply_tiering
from diary_platform.io_manager import ParquetIOManager
from diary_platform.definitions import build_resources
from diary_platform.resources import open_store
from diary_platform.runner import process_files
from diary_platform_tests.conftest import new_batch, run_job

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*") if p.suffix in {".flac", ".mp3"})

# A child process that streams an object through the store and stops (for ever) after half of it.
HALF_WRITER = """
import sys, time
from diary_platform.domain.store.layout import DataStore
from diary_platform.resources import open_store
from diary_platform.settings import Settings
store = open_store(Settings(data_dir=sys.argv[1], storage_uri=sys.argv[2]))
payload = b"new " * (int(sys.argv[4]) // 4)
with store.objects.writer(sys.argv[3]) as handle:
    handle.write(payload[: len(payload) // 2])
    handle.flush()
    print("half", flush=True)
    time.sleep(600)
    handle.write(payload[len(payload) // 2 :])
"""


def kill_writer_halfway(state_root: Path, storage_uri: str, key: str, size: int) -> None:
    """Start a writer of `key`, wait until half the bytes are out, SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-c", HALF_WRITER, str(state_root), storage_uri, key, str(size)],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    try:
        assert child.stdout.readline().strip() == "half"
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def test_a_write_that_fails_halfway_keeps_the_previous_version(tmp_path):
    store = LocalTieredStore(tmp_path)
    store.write_bytes("tables/notes/b1.parquet", b"version one")
    with pytest.raises(RuntimeError):
        with store.writer("tables/notes/b1.parquet") as handle:
            handle.write(b"half of version t")
            raise RuntimeError("disk went away")
    assert store.read_bytes("tables/notes/b1.parquet") == b"version one"
    assert [p.name for p in (tmp_path / "hot" / "tables" / "notes").iterdir()] == ["b1.parquet"]


def test_a_killed_writer_leaves_the_previous_version_and_no_partial_object(tmp_path):
    store = DataStore(tmp_path)
    store.objects.write_bytes("tables/notes/b1.parquet", b"version one")
    kill_writer_halfway(tmp_path, "", "tables/notes/b1.parquet", 8 << 20)
    assert store.objects.read_bytes("tables/notes/b1.parquet") == b"version one"
    assert [o.key for o in store.objects.scan()] == ["tables/notes/b1.parquet"]
    leftovers = list((tmp_path / "hot" / "tables" / "notes").glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size >= 4 << 20, "the killed writer's temp file"
    assert store.objects.remove_stale_temporaries(datetime.now(timezone.utc) + timedelta(seconds=1)) == 1
    assert not list((tmp_path / "hot").rglob(".*.tmp"))


def test_atomic_writer_renames_only_complete_files(tmp_path):
    target = tmp_path / "a" / "b.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(target) as handle:
            handle.write(b"x" * 1000)
            raise KeyboardInterrupt
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_originals_are_stored_once_per_content_and_unchanged_values_are_not_rewritten(tmp_path):
    store = DataStore(tmp_path / "data")
    upload = tmp_path / "memo.M4A"
    upload.write_bytes(b"audio bytes")
    sha = hashlib.sha256(b"audio bytes").hexdigest()
    first = store.store_original(upload, sha)
    again = store.store_original(upload, sha)
    assert (first.new, again.new) == (True, False)
    assert first.uri == again.uri and first.key.endswith(f"{sha}.m4a") and first.tier == "hot"
    assert store.objects.read_bytes(first.key) == b"audio bytes"

    frame = pl.DataFrame({"a": [1, 2]})
    written = store.write_table("transcripts", "b1", frame)
    mtime = (tmp_path / "data" / "hot" / written.key).stat().st_mtime_ns
    assert store.write_table("transcripts", "b1", frame).new is False
    assert (tmp_path / "data" / "hot" / written.key).stat().st_mtime_ns == mtime
    assert store.write_table("transcripts", "b1", pl.DataFrame({"a": [3]})).new is True


def test_an_upload_that_changed_after_it_was_hashed_is_refused_and_nothing_is_stored(tmp_path):
    store = DataStore(tmp_path / "data")
    upload = tmp_path / "memo.flac"
    upload.write_bytes(b"what the sensor hashed" * 1000)
    hashed = hashlib.sha256(upload.read_bytes()).hexdigest()
    upload.write_bytes(b"what arrived afterwards" * 1000)
    with pytest.raises(ContentChanged):
        store.store_original(upload, hashed)
    assert list(store.objects.scan("audio/")) == []
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()], "no object, no temp file"
    stored = store.store_original(upload, hashlib.sha256(upload.read_bytes()).hexdigest())
    assert stored.new and store.objects.read_bytes(stored.key) == upload.read_bytes()


def test_a_rewrite_of_an_object_in_a_cold_tier_goes_to_hot_and_leaves_one_copy(tmp_path):
    store = LocalTieredStore(tmp_path)
    store.write_bytes("notes/r1.md", b"old")
    store.move("notes/r1.md", "cold")
    assert store.find("notes/r1.md").tier == "cold" and store.read_bytes("notes/r1.md") == b"old"
    written = store.write_bytes("notes/r1.md", b"new")
    assert written.tier == "hot" and store.read_bytes("notes/r1.md") == b"new"
    assert [(o.key, o.tier) for o in store.scan()] == [("notes/r1.md", "hot")]


def test_the_policy_picks_tiers_by_age():
    policy = TieringPolicy(warm_after_days=30, cold_after_days=90)
    assert [policy.tier_for(timedelta(days=d)) for d in (0, 29, 30, 89, 90, 400)] == [
        "hot", "hot", "warm", "warm", "cold", "cold"
    ]
    with pytest.raises(ValueError):
        TieringPolicy(warm_after_days=90, cold_after_days=30)


@pytest.fixture
def processed_examples(settings):
    with dg.instance_for_test() as instance:
        report = process_files(EXAMPLES, "alice", settings, instance)
        assert all(r.status == "ok" for r in report.results)
        yield settings, instance, report


def _materialize_tiers(settings, instance, as_of: datetime, **policy) -> dg.ExecuteInProcessResult:
    """The storage job, judged as if the clock read `as_of`, under the settings' policy changed by `policy`."""
    if policy:
        settings = settings.model_copy(update={"tiering": replace(settings.tiering, **policy)})
    return run_job(settings, "storage_job", instance, run_config={"ops": {"storage_tiers": {"config": {"as_of": as_of.isoformat()}}}})


def _tiers(settings) -> dict[str, set[str]]:
    """Tiers in use per top folder, leaving out the report itself (rewritten to hot by every run)."""
    by_asset: dict[str, set[str]] = {}
    for stored in open_store(settings).objects.scan():
        if stored.key.startswith("tables/storage_tiers/"):
            continue
        by_asset.setdefault(stored.key.split("/")[0], set()).add(stored.tier)
    return by_asset


def test_tiering_moves_data_tier_by_tier_and_every_asset_still_loads(processed_examples):
    settings, instance, report = processed_examples
    batch_key = report.results[0].batch_key
    store = open_store(settings)
    before = {o.key: store.objects.read_bytes(o.key) for o in store.objects.scan()}
    now = datetime.now(timezone.utc)

    unchanged = _materialize_tiers(settings, instance, now + timedelta(days=1))
    assert unchanged.success and set().union(*_tiers(settings).values()) == {"hot"}

    warm = _materialize_tiers(settings, instance, now + timedelta(days=31))
    metadata = warm.asset_materializations_for_node("storage_tiers")[0].metadata
    assert metadata["moved_objects"].value == len(before) + 1, "everything, and the previous report"
    assert metadata["warm_objects"].value == len(before) + 1 and metadata["hot_objects"].value == 0
    assert set().union(*_tiers(settings).values()) == {"warm"}
    report = {(r.data["asset"], r.data["tier"]): r.data["objects"] for r in metadata["report"].value.records}
    assert report[("transcripts", "warm")] > 0 and report[("transcripts", "hot")] == 0

    _materialize_tiers(settings, instance, now + timedelta(days=181))
    assert set().union(*_tiers(settings).values()) == {"cold"}
    hot_files = [p for p in (settings.data_dir / "hot").rglob("*") if p.is_file()]
    assert [p.parent.name for p in hot_files] == ["storage_tiers"], "only the new report is hot"

    after = {o.key: store.objects.read_bytes(o.key) for o in store.objects.scan() if not o.key.startswith("tables/storage_tiers")}
    assert after == {k: v for k, v in before.items() if not k.startswith("tables/storage_tiers")}
    for name in ("raw_audio", "validated_audio", "transcripts", "diary_notes"):
        assert store.read_table(name, batch_key).height == len(EXAMPLES)
    notes = store.read_table("diary_notes", batch_key)
    assert all(store.read_text(uri).startswith("# ") for uri in notes["note_uri"])

    resources = build_resources(settings)
    again = dg.materialize(
        [*batch.assets(settings), *batch.CHECKS], partition_key=batch_key, instance=instance, resources=resources,
        selection=dg.AssetSelection.assets("diary_notes"),
    )
    assert again.success, "diary_notes re-materialized from transcripts stored in the cold tier"
    event = again.asset_materializations_for_node("diary_notes")[0]
    assert event.metadata["tier"].value == "hot", "the new table (its timings differ) is written to hot"
    assert _tiers(settings)["notes"] == {"cold"}, "note files with unchanged text were not written again"
    assert len(list(store.objects.scan("tables/diary_notes/"))) == 1, "and the cold copy of the table is gone"


def test_retention_deletes_only_old_originals_and_records_them_first(processed_examples):
    settings, instance, report = processed_examples
    now = datetime.now(timezone.utc)
    result = _materialize_tiers(settings, instance, now + timedelta(days=10), delete_originals_after_days=30)
    assert result.asset_materializations_for_node("storage_tiers")[0].metadata["deleted_originals"].value == 0

    result = _materialize_tiers(settings, instance, now + timedelta(days=40), delete_originals_after_days=30)
    metadata = result.asset_materializations_for_node("storage_tiers")[0].metadata
    assert metadata["deleted_originals"].value == len(EXAMPLES)
    store = open_store(settings)
    assert not [o for o in store.objects.scan("audio/original/")]
    assert len(list(store.objects.scan("audio/normalised/"))) == len(EXAMPLES)
    [record] = list(store.objects.scan("records/retention/"))
    deleted = json.loads(store.objects.read_bytes(record.key))["deleted"]
    assert sorted(d["key"].rsplit("/", 1)[-1].split(".")[0] for d in deleted) == sorted(
        store.read_table("raw_audio", report.results[0].batch_key)["content_sha256"]
    )
    assert all(path.exists() for path in EXAMPLES), "retention never touches the uploads themselves"


def test_retention_is_off_by_default(tmp_path):
    store = LocalTieredStore(tmp_path)
    store.write_bytes("audio/original/ab/ab.flac", b"x")
    outcome = apply_tiering(store, TieringPolicy(), datetime.now(timezone.utc) + timedelta(days=3650))
    assert outcome.deletions == [] and [o.tier for o in store.scan()] == ["cold"]


def test_a_dry_run_changes_nothing(tmp_path):
    store = LocalTieredStore(tmp_path)
    store.write_bytes("notes/r.md", b"x")
    outcome = apply_tiering(store, TieringPolicy(1, 2, 1), datetime.now(timezone.utc) + timedelta(days=5), dry_run=True)
    assert [m.to_tier for m in outcome.moves] == ["cold"] and outcome.deletions == []
    assert [o.tier for o in store.scan()] == ["hot"]


FAILED_ONCE: set[str] = set()


class FlakyIOManager(ParquetIOManager):
    """Fails the first write of each asset once, as a storage hiccup (a 503 from GCS, a full queue) would."""

    def handle_output(self, context, obj):
        name = context.asset_key.to_user_string()
        if name not in FAILED_ONCE:
            FAILED_ONCE.add(name)
            raise ConnectionError(f"storage unavailable while writing {name}")
        super().handle_output(context, obj)


def test_a_transient_storage_fault_is_retried_by_the_steps_retry_policy(settings):
    resources = build_resources(settings)
    resources["io_manager"] = FlakyIOManager(store=resources["store"])
    FAILED_ONCE.clear()
    store = resources["store"]
    manifest = new_batch(settings, [EXAMPLES[0]])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", [manifest.key])
        result = dg.materialize(
            [*batch.assets(settings), *batch.CHECKS], partition_key=manifest.key, instance=instance, resources=resources
        )
        assert result.success
        retried = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
        assert sorted(retried) == ["diary_notes", "raw_audio", "transcripts", "validated_audio"]
        materialized = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
        assert sorted(materialized) == ["diary_notes", "raw_audio", "transcripts", "validated_audio"]
    notes = store.store.read_table("diary_notes", manifest.key)
    assert notes["status"].to_list() == ["ok"] and notes["markdown"][0].startswith("# ")
    assert len(list(store.store.objects.scan("audio/original/"))) == 1, "the retried ingest stored the original once"
