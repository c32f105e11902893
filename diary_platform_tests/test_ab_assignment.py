"""A/B tests of the model registry: stable assignment by user, the share honoured, the arm recorded per row
for transcription and note writing, and an ended experiment sending everyone back to the baseline."""

from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest

from diary_platform.domain.models.assignment import BASELINE, CANDIDATE, ModelRouting, arm_of, bucket
from diary_platform.domain.models.registry import Experiment, RegistryError, load_registry
from diary_platform.domain.notes.note import NoteRequest
from diary_platform.domain.speech.policy import stale_batches
from diary_platform.domain.speech.transcription import TranscriberConfig
from diary_platform.runner import process_files
from diary_platform.settings import Settings

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
REGISTRY = """
transcription:
  - {{id: tiny-greedy, beam_size: 1}}
  - {{id: tiny-beam5, beam_size: 5}}
notes:
  - {{id: haiku, provider: anthropic, model: claude-haiku-4-5}}
  - {{id: mini, provider: openai, model: gpt-4o-mini}}
baseline: {{transcription: tiny-greedy, notes: mini}}
candidates: {{transcription: [tiny-beam5], notes: [haiku]}}
experiments:
  - {{id: beam-trial, kind: transcription, candidate: tiny-beam5, share: {share}, start: 2026-11-01T00:00:00Z, stop: {stop}}}
  - {{id: haiku-trial, kind: notes, candidate: haiku, share: {share}}}
"""


def registry_file(tmp_path, share=0.3, stop="2099-01-01T00:00:00Z"):
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY.format(share=share, stop=stop))
    return path


def test_assignment_is_stable_per_user_and_honours_the_share_over_ten_thousand_users():
    trial = Experiment("beam-trial", "transcription", "tiny-beam5", 0.3)
    users = [f"user-{n}" for n in range(10_000)]
    arms = [arm_of(trial, user, NOW) for user in users]
    assert arms == [arm_of(trial, user, NOW) for user in users], "the same user always gets the same arm"
    assert abs(arms.count(CANDIDATE) / len(users) - 0.3) < 0.015
    other = Experiment("another-trial", "transcription", "tiny-beam5", 0.3)
    overlap = sum(1 for user, arm in zip(users, arms) if arm == CANDIDATE and arm_of(other, user, NOW) == CANDIDATE)
    assert abs(overlap / len(users) - 0.09) < 0.015, "experiments assign independently"
    assert all(0 <= bucket(trial.id, user) < 1 for user in users[:100])


def test_an_experiment_outside_its_window_routes_everyone_to_the_baseline(tmp_path):
    registry = load_registry(registry_file(tmp_path, share=1.0, stop="2026-11-15T00:00:00Z"), TranscriberConfig())
    routing = ModelRouting(registry, None, NOW)
    assignment, config = routing.transcription("alice")
    assert (assignment.model_id, assignment.arm, config.beam_size) == ("tiny-greedy", None, 1)
    during = ModelRouting(registry, None, datetime(2026, 11, 10, tzinfo=timezone.utc)).transcription("alice")
    assert (during[0].model_id, during[0].arm, during[0].experiment, during[1].beam_size) == ("tiny-beam5", CANDIDATE, "beam-trial", 5)


def test_an_experiment_must_name_a_registered_candidate_and_one_per_kind(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(REGISTRY.format(share=0.5, stop="null").replace("candidate: tiny-beam5", "candidate: tiny-large"))
    with pytest.raises(RegistryError, match="tiny-large"):
        load_registry(path, TranscriberConfig())
    path.write_text(REGISTRY.format(share=0.5, stop="null").replace("kind: notes", "kind: transcription").replace("candidate: haiku", "candidate: tiny-beam5"))
    with pytest.raises(RegistryError, match="one experiment per kind"):
        load_registry(path, TranscriberConfig())


def test_a_candidate_arm_note_is_written_by_the_experiments_model_first(tmp_path):
    from diary_platform_tests.test_note_batches import FakeLLM, routed, segments

    registry = load_registry(registry_file(tmp_path, share=1.0), TranscriberConfig())
    routing = ModelRouting(registry, None, NOW)
    assignment, first = routing.notes_model("alice")
    assert (assignment.model_id, assignment.arm, first) == ("haiku", CANDIDATE, ("anthropic", "claude-haiku-4-5"))
    with FakeLLM() as fake:
        router = routed(fake, tmp_path)
        note = router.write(NoteRequest("r" * 24, "alice", NOW, "I walked.", segments(), priority="urgent", first_choice=first))
    assert (note.provider, note.model) == ("anthropic", "claude-haiku-4-5"), note.fallback_path


def test_the_arm_and_model_are_recorded_per_row_and_an_ended_experiment_makes_the_batch_stale(tmp_path, monkeypatch, clips):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIARY_MODEL_REGISTRY", str(registry_file(tmp_path, share=1.0)))
    settings = Settings()
    with dg.instance_for_test() as instance:
        [result] = process_files([clips[0].path], "alice", settings, instance).results
    key = result.batch_key
    transcripts = pl.read_parquet(tmp_path / "data" / "hot" / "tables" / "transcripts" / f"{key}.parquet")
    notes = pl.read_parquet(tmp_path / "data" / "hot" / "tables" / "diary_notes" / f"{key}.parquet")
    row = transcripts.row(0, named=True)
    assert (row["model_version"], row["arm"], row["experiment"]) == ("tiny-beam5", CANDIDATE, "beam-trial")
    assert notes.row(0, named=True)["arm"] == CANDIDATE and notes.row(0, named=True)["model_version"] == "haiku"
    registry = load_registry(settings.model_registry, settings.transcriber)
    ongoing = ModelRouting(registry, None, NOW)
    assert stale_batches(settings.policy(), transcripts, lambda r: ongoing.transcription(r["user"])[1]) == {}
    ended = ModelRouting(registry, None, datetime(2100, 1, 1, tzinfo=timezone.utc))
    assert stale_batches(settings.policy(), transcripts, lambda r: ended.transcription(r["user"])[1]) == {key: 1}, (
        "back on the baseline, the candidate's transcripts are stale")
    assert ended.transcription("alice")[0].arm is None and ended.transcription("alice")[0].model_id == "tiny-greedy"
    assert BASELINE in {arm_of(Experiment("x", "transcription", "tiny-beam5", 0.5), f"u{n}", NOW) for n in range(20)}


def test_a_promotion_marks_the_batches_it_leaves_behind_for_retranscription(tmp_path, monkeypatch, clips):
    from diary_platform.batch.transcripts import CURRENT_MODELS
    from diary_platform.definitions import build_resources
    from diary_platform.domain.models.registry import ModelPromotion
    from diary_platform.models.promotion import report_stale_transcripts

    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIARY_MODEL_REGISTRY", str(registry_file(tmp_path, share=0.5, stop="2026-11-15T00:00:00Z")))
    settings = Settings()
    resources = build_resources(settings)
    with dg.instance_for_test() as instance:
        [result] = process_files([clips[1].path], "alice", settings, instance).results
        store = resources["store"]
        promotion = ModelPromotion("transcription", "tiny-beam5", "tiny-greedy", "alice", NOW)
        assert report_stale_transcripts(instance, resources["whisper"], store, promotion) == {}, "nothing stale before the promotion"
        store.shared_state.model_promotions.add(promotion)
        assert report_stale_transcripts(instance, resources["whisper"], store, promotion) == {result.batch_key: 1}
        record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(dg.AssetKey("transcripts"), CURRENT_MODELS))
        evaluation = record.event.dagster_event.asset_check_evaluation_data
        assert not evaluation.passed and evaluation.partition == result.batch_key
