"""Old batch partition keys leave the partition set; their data and the newer keys stay."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from diary_platform.batch.retention import expired, retention_sensor
from diary_platform.definitions import build_definitions
from diary_platform.domain.ingest.batches import new_batch_key
from diary_platform.partitions import BATCHES
from diary_platform.settings import Settings


def test_keys_older_than_the_retention_go_and_the_rest_stay(instance):
    now = datetime.now(timezone.utc)
    old = [new_batch_key(now - timedelta(days=days, hours=1)) for days in (9, 8, 7)]
    recent = [new_batch_key(now - timedelta(days=6, hours=23)), new_batch_key(now)]
    instance.add_dynamic_partitions(BATCHES, ["not-a-batch-key", *old, *recent])

    with dg.build_sensor_context(instance=instance) as context:
        result = retention_sensor(7).evaluate_tick(context)
    [request] = result.dynamic_partitions_requests
    assert isinstance(request, dg.DeleteDynamicPartitionsRequest) and sorted(request.partition_keys) == sorted(old)
    for key in request.partition_keys:
        instance.delete_dynamic_partition(BATCHES, key)
    assert sorted(instance.get_dynamic_partitions(BATCHES)) == sorted(["not-a-batch-key", *recent])

    with dg.build_sensor_context(instance=instance) as context:
        assert retention_sensor(7).evaluate_tick(context).dynamic_partitions_requests == []


def test_the_sensor_exists_only_when_a_retention_is_set(monkeypatch, tmp_path):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path))
    assert "batch_partition_retention" not in {s.name for s in build_definitions(Settings()).sensors}
    monkeypatch.setenv("DIARY_PARTITION_RETENTION_DAYS", "30")
    assert "batch_partition_retention" in {s.name for s in build_definitions(Settings()).sensors}
    assert expired([new_batch_key(datetime(2026, 1, 1, tzinfo=timezone.utc))], datetime(2026, 1, 31, 0, 0, 1, tzinfo=timezone.utc), timedelta(days=30))
