"""Traces from the sensor tick through every step and recording, metrics, and the Prometheus endpoint."""

import urllib.request

import dagster as dg
import pytest
from opentelemetry.sdk.metrics import MeterProvider

from diary_platform import telemetry
from diary_platform.domain import instruments

from diary_platform import batch
from diary_platform.definitions import build_resources
from diary_platform.batch.landing_sensor import landing_sensor
from diary_platform_tests.conftest import drop, free_port

STEPS = ["raw_audio step", "validated_audio step", "transcripts step", "diary_notes step"]
PER_RECORDING = {"ingest": "raw_audio step", "decode": "validated_audio step", "validate": "validated_audio step",
                 "transcribe": "transcripts step", "write_note": "diary_notes step"}


def test_one_batch_gives_a_trace_from_the_sensor_tick_to_every_recording(settings, clips, telemetry_readers):
    exporter = telemetry_readers.spans
    for clip in clips[:2]:
        drop(settings.landing_dir, "alice", clip.path)
    resources = build_resources(settings)
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = landing_sensor(context)
        exporter.clear()
        with dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources) as context:
            second = landing_sensor(context)
        [request] = second.run_requests
        assert request.tags["diary/traceparent"].startswith("00-")
        instance.add_dynamic_partitions("batches", [request.partition_key])
        result = dg.materialize(
            [*batch.assets(settings), *batch.CHECKS], partition_key=request.partition_key, instance=instance,
            resources=resources, tags=request.tags,
        )
    spans = exporter.get_finished_spans()
    by_name: dict[str, list] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [tick] = by_name["landing_sensor tick"]
    trace_id = tick.context.trace_id
    steps = {name: by_name[name][0] for name in STEPS}
    for step in steps.values():
        assert step.parent.span_id == tick.context.span_id and step.context.trace_id == trace_id
    for name, step_name in PER_RECORDING.items():
        assert len(by_name[name]) == 2, name
        for span in by_name[name]:
            assert span.parent.span_id == steps[step_name].context.span_id, name
            assert span.attributes["diary.recording_id"] and span.attributes["diary.user"] == "alice"
            assert span.attributes["diary.batch"] == request.partition_key
    for span in [*steps.values(), *(s for name in PER_RECORDING for s in by_name[name])]:
        assert span.attributes["dagster.run_id"] == result.run_id
    transcribe = by_name["transcribe"][0].attributes
    assert transcribe["diary.audio_seconds"] > 3 and transcribe["diary.model"].startswith("tiny.en")
    note = by_name["write_note"][0].attributes
    assert note["diary.provider"] == "local" and note["diary.input_tokens"] == 0


def _metric_points(reader) -> dict[str, list]:
    points = {}
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    return points


def test_metrics_count_audio_recordings_speed_and_llm_use(settings, clips, telemetry_readers):
    from diary_platform.runner import process_files

    with dg.instance_for_test() as instance:
        [result] = process_files([clips[0].path], "alice", settings, instance).results
    points = _metric_points(telemetry_readers.metrics)
    assert sum(p.value for p in points["diary.audio.seconds"]) == pytest.approx(result.audio_seconds)
    stages = {(p.attributes["stage"], p.attributes["status"]) for p in points["diary.recordings"]}
    assert stages == {("ingest", "ok"), ("validate", "ok"), ("transcribe", "ok"), ("write_note", "ok")}
    assert all(p.value == 1 for p in points["diary.recordings"]), "one recording, counted once per stage"
    assert sum(p.count for p in points["diary.transcription.speed"]) >= 1
    assert {p.attributes["direction"] for p in points["diary.llm.tokens"]} == {"input", "cached_input", "output"}
    assert {p.attributes["delivery"] for p in points["diary.llm.cost"]} == {"synchronous"}
    assert "diary.llm.saved" in points


def test_the_prometheus_endpoint_serves_the_platform_series(settings, clips, telemetry_readers):
    from prometheus_client import CollectorRegistry

    from diary_platform.runner import process_files

    port = free_port()
    meter_provider = MeterProvider(metric_readers=telemetry.prometheus_readers(port, CollectorRegistry()))
    previous = instruments.use(instruments.Instruments.on(meter_provider=meter_provider))
    try:
        with dg.instance_for_test() as instance:
            process_files([clips[1].path], "alice", settings, instance)
    finally:
        instruments.use(previous)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    meter_provider.shutdown()
    for series in ("diary_audio_seconds_total", "diary_recordings_total", "diary_transcription_speed",
                   "diary_llm_tokens_total"):
        assert series in body, series
    transcribed = [line for line in body.splitlines() if line.startswith("diary_recordings_total{") and 'stage="transcribe"' in line]
    assert len(transcribed) == 1 and transcribed[0].endswith(" 1.0"), transcribed
