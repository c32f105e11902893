"""Old batches leave Dagster (partition keys and finished runs); their data stays, and a retired batch still
reads as done, so its content dropped again is a duplicate, not new work."""

from datetime import datetime, timedelta, timezone

import pytest

from diary_platform.batch.retention import expired, retire_batches
from diary_platform.definitions import build_definitions
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.ingest.batches import new_batch_key
from diary_platform.domain.ingest.recovery import BatchState
from diary_platform.partitions import BATCHES
from diary_platform.resources import open_store
from diary_platform.runner import BatchRunner, process_files
from diary_platform.settings import ConfigurationError, Settings


def test_keys_older_than_the_retention_go_and_the_rest_stay(instance):
    now = datetime.now(timezone.utc)
    old = [new_batch_key(now - timedelta(days=days, hours=1)) for days in (11, 10, 9)]
    recent = [new_batch_key(now - timedelta(days=8, hours=23)), new_batch_key(now)]
    instance.add_dynamic_partitions(BATCHES, ["not-a-batch-key", *old, *recent])

    assert retire_batches(instance, timedelta(days=9), now) == (3, 0)
    assert sorted(instance.get_dynamic_partitions(BATCHES)) == sorted(["not-a-batch-key", *recent])
    assert retire_batches(instance, timedelta(days=9), now) == (0, 0)
    assert expired(["a-1", *recent], now, timedelta(days=9)) == []


def test_a_retired_batch_keeps_its_data_and_still_reads_as_done(settings, instance, clips):
    report = process_files([clips[2].path], "alice", settings, instance)
    [result] = report.results
    key = result.batch_key
    stranded_key = new_batch_key(datetime.now(timezone.utc))
    runner = BatchRunner(settings, instance, source="test")
    later = datetime.now(timezone.utc) + timedelta(days=9)

    keys, runs = retire_batches(instance, timedelta(days=8), later)
    assert (keys, runs) == (1, 1) and instance.get_runs_count() == 0
    assert not instance.has_dynamic_partition(BATCHES, key)
    assert Catalog(open_store(settings)).has("diary_notes", key), "the data stays in storage"
    assert runner.recovery.state(key, later) is BatchState.DONE, "no run left: the stored notes say done"
    assert runner.recovery.state(stranded_key, later) is BatchState.STRANDED, "no run and no notes: not done"

    again = process_files([clips[2].path], "alice", settings, instance)
    assert [r.origin for r in again.results] == ["known"], "its content is a duplicate, not new work"


def test_a_retention_within_recoverys_window_is_refused_and_the_job_exists_only_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path))
    assert "batch_retention" not in {job.name for job in build_definitions(Settings()).jobs}
    monkeypatch.setenv("DIARY_PARTITION_RETENTION_DAYS", "7")
    with pytest.raises(ConfigurationError, match="DIARY_PARTITION_RETENTION_DAYS"):
        Settings()
    monkeypatch.setenv("DIARY_PARTITION_RETENTION_DAYS", "30")
    definitions = build_definitions(Settings())
    assert "batch_retention" in {job.name for job in definitions.jobs}
    assert definitions.get_schedule_def("batch_retention_hourly").cron_schedule == "15 * * * *"
