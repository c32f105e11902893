"""Note quality on the golden set: facts that cite a segment which does not say them are counted, per model."""

import dagster as dg
import pytest

from diary_platform.definitions import build_definitions
from diary_platform.domain.models.note_quality import evaluate_notes, golden_note, unsupported_items
from diary_platform.domain.notes.note import Note
from diary_platform.settings import Settings
from diary_platform_tests.test_note_batches import ANTHROPIC, GPT, HAIKU, OPENAI, FakeLLM, routed

SEGMENTS = [{"start": 0.0, "end": 5.0, "text": "I met my sister Anna in Berlin."}, {"start": 5.0, "end": 9.0, "text": "Then I called the dentist."}]


def note(events: list[str], citations: list[dict]) -> Note:
    return Note("t", "s", events, [], [], [], "neutral", "p", "m", citations=citations)


def test_a_fact_is_backed_only_by_the_segment_it_cites():
    backed = note(["Met sister Anna in Berlin"], [{"field": "events", "text": "Met sister Anna in Berlin", "segments": [0]}])
    assert unsupported_items(backed, SEGMENTS) == (1, [])
    wrong_segment = note(["Met sister Anna in Berlin"], [{"field": "events", "text": "Met sister Anna in Berlin", "segments": [1]}])
    assert unsupported_items(wrong_segment, SEGMENTS) == (1, ["Met sister Anna in Berlin"])
    invented = note(["Went skydiving over the Alps"], [{"field": "events", "text": "Went skydiving over the Alps", "segments": [0]}])
    assert unsupported_items(invented, SEGMENTS)[1] == ["Went skydiving over the Alps"]
    uncited = note(["Called the dentist", "Flew to Tokyo"], [])
    assert unsupported_items(uncited, SEGMENTS) == (2, ["Flew to Tokyo"]), "without citations: the whole transcript"


def test_each_model_gets_its_share_of_unsupported_facts(tmp_path):
    golden = [golden_note("a", "I met my sister Anna in Berlin. Then I called the dentist.", ("Anna", "dentist")),
              golden_note("b", "I walked along the river. The weather was cold.", ("river",))]
    with FakeLLM() as fake:
        fake.script(OPENAI, GPT, "unsupported", "unsupported")
        router = routed(fake, tmp_path)
        table = evaluate_notes(router.write, {"mini": ("openai", GPT), "haiku": ("anthropic", HAIKU)}, golden)
    rows = {row["model_id"]: row for row in table.iter_rows(named=True)}
    assert rows["mini"]["unsupported"] == 2 and rows["mini"]["unsupported_share"] == pytest.approx(2 / rows["mini"]["items"])
    assert rows["mini"]["unsupported_examples"] == ["Went skydiving over the Alps with a circus troupe"] * 2
    assert rows["haiku"]["unsupported"] == 0 and rows["haiku"]["written_by"] == f"anthropic/{HAIKU}"
    assert rows["haiku"]["facts_mentioned"] == pytest.approx(1.0)
    assert len(fake.requests(ANTHROPIC, HAIKU)) == 2


def test_the_asset_reports_the_platforms_own_route_on_the_committed_clips(tmp_path, monkeypatch):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    settings = Settings()
    definitions = build_definitions(settings)
    job = definitions.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("note_quality")])
    assert result.success
    [materialization] = result.asset_materializations_for_node("note_quality")
    assert materialization.metadata["unsupported_share/route"].value == 0.0, "the local writer states only what was said"
    assert 0 < materialization.metadata["facts_mentioned/route"].value <= 1
    [check] = result.get_asset_check_evaluations()
    assert check.passed
