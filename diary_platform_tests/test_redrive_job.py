"""Re-driving the quarantine the Dagster way: `redrive_job` makes the batch, `redriven_batches` runs it."""

from datetime import datetime, timezone

import dagster as dg
import pytest

from diary_platform.batch.recovery import recovery_for
from diary_platform.batch.redrive import REDRIVEN_BATCH_TAG, redriven_batches
from diary_platform.definitions import build_definitions, build_resources
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.ingest.quarantine import list_quarantine
from diary_platform.domain.ingest.recovery import BatchState
from diary_platform.resources import open_state, open_store
from diary_platform.runner import process_files


def _redrive(definitions, instance, **config):
    return definitions.resolve_job_def("redrive_job").execute_in_process(
        run_config={"ops": {"redrive_quarantined": {"config": config}}}, instance=instance, raise_on_error=False
    )


def _batches(settings) -> list[str]:
    return sorted(path.stem for path in (settings.data_dir / "batches").rglob("*.json"))


@pytest.fixture
def quarantined(settings, instance, tmp_path, clips):
    """One good clip and two bad uploads processed; the two bad ones are in the quarantine."""
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("this is a text file, not a recording\n" * 20)
    process_files([clips[0].path, empty, text], "alice", settings, instance)
    store = open_store(settings)
    listed = {r.source_name: r for r in list_quarantine(Catalog(store), open_state(settings, instance).batches)}
    assert set(listed) == {"empty.wav", "notes.mp3"}
    return listed


def test_the_redrive_job_makes_a_batch_of_the_selection_and_the_sensor_runs_it(settings, instance, quarantined):
    definitions = build_definitions(settings)
    before = _batches(settings)
    result = _redrive(definitions, instance, reasons=["empty_file"], users=["alice"])
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    key = run.tags[REDRIVEN_BATCH_TAG]
    assert _batches(settings) == sorted([*before, key]) and instance.has_dynamic_partition("batches", key)
    store = open_store(settings)
    recovery = recovery_for(instance, open_state(settings, instance).batches, Catalog(store))
    assert recovery.state(key, datetime.now(timezone.utc)) is BatchState.RUNNING, "handed over: recovery leaves it alone"

    [entry] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    with dg.build_run_status_sensor_context(
        sensor_name="redriven_batches", dagster_event=entry.dagster_event, dagster_instance=instance, dagster_run=run,
        resources=build_resources(settings),
    ) as context:
        request = redriven_batches(context)
    assert (request.partition_key, request.run_key) == (key, key)
    assert (request.tags["diary/source"], request.tags["diary/users"], request.tags["diary/batch"]) == ("redrive", "alice", key)

    processed = definitions.resolve_job_def("process_batch").execute_in_process(partition_key=key, instance=instance, tags=request.tags)
    assert processed.success
    raw = store.read_table("raw_audio", key)
    validated = store.read_table("validated_audio", key).join(raw.select("recording_id", "source_name"), on="recording_id")
    assert validated.select("source_name", "status", "reason").rows() == [("empty.wav", "quarantined", "empty_file")]
    assert raw["source_name"].to_list() == ["empty.wav"], "the name it was uploaded under"
    assert recovery.state(key, datetime.now(timezone.utc)) is BatchState.DONE


def test_the_redrive_job_refuses_an_unknown_reason_and_makes_nothing(settings, instance, quarantined):
    before = _batches(settings)
    result = _redrive(build_definitions(settings), instance, reasons=["nonsense"])
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "unknown reason code nonsense" in failure.step_failure_data.user_failure_data.description
    assert len([e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]) == 1, "no retries"
    assert _batches(settings) == before


def test_a_selection_that_matches_nothing_makes_no_batch_and_the_sensor_skips(settings, instance, quarantined):
    before = _batches(settings)
    result = _redrive(build_definitions(settings), instance, recording_ids=["0" * 24])
    assert result.success and _batches(settings) == before
    run = instance.get_run_by_id(result.run_id)
    [entry] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    with dg.build_run_status_sensor_context(
        sensor_name="redriven_batches", dagster_event=entry.dagster_event, dagster_instance=instance, dagster_run=run,
        resources=build_resources(settings),
    ) as context:
        assert isinstance(redriven_batches(context), dg.SkipReason)
    store = open_store(settings)
    assert len(list_quarantine(Catalog(store), open_state(settings, instance).batches)) == len(quarantined)
