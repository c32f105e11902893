"""The transcription policy: a priority tag or a duration band picks the model and its settings, the
choice is kept per recording, and a changed rule marks exactly the batches it now routes differently."""

from pathlib import Path

import dagster as dg
import pytest

from diary_platform import batch
from diary_platform.definitions import build_resources
from diary_platform.domain.catalog import TRANSCRIPTS, Catalog
from diary_platform.domain.speech.policy import DEFAULT_RULE, PolicyError, load_policy, priority_of, stale_batches
from diary_platform.domain.speech.transcription import TranscriberConfig, resolve_model
from diary_platform.partitions import BATCHES
from diary_platform.resources import open_store
from diary_platform.runner import retranscribe
from diary_platform.settings import ConfigurationError, Settings
from diary_platform_tests.conftest import drop
from diary_platform_tests.test_pipeline import _tick

BASE = TranscriberConfig()
RULES = """
rules:
  - name: urgent
    when: {priority: [urgent, asap]}
    use: {beam_size: 5, packing: per_file}
  - name: long
    when: {min_seconds: 1800}
    use: {beam_size: 3}
  - name: short
    when: {max_seconds: 5}
    use: {compute_type: float32}
"""


def _policy(tmp_path, text=RULES, name="policy.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_first_rule_that_matches_the_tag_and_the_duration_decides(tmp_path):
    policy = load_policy(_policy(tmp_path), BASE)
    urgent = policy.choose("urgent", 7200.0)
    assert urgent.rule == "urgent" and urgent.config.beam_size == 5 and urgent.config.packing == "per_file"
    assert urgent.config.batch_size == BASE.batch_size, "a rule overrides only what it names"
    assert policy.choose(None, 1800.0).rule == "long" and policy.choose(None, 1799.9).rule == DEFAULT_RULE
    assert policy.choose("later", 4.9).rule == "short" and policy.choose("later", 5.0).rule == DEFAULT_RULE
    assert policy.choose(None, 60.0).config == BASE
    assert len({policy.choose(*case).version for case in [("urgent", 60.0), (None, 2000.0), (None, 1.0), (None, 60.0)]}) == 4


def test_a_changed_rule_changes_the_version_of_what_it_routes_and_nothing_else(tmp_path):
    before = load_policy(_policy(tmp_path), BASE)
    after = load_policy(_policy(tmp_path, RULES.replace("beam_size: 5", "beam_size: 4"), "after.yaml"), BASE)
    assert before.choose("urgent", 60.0).version != after.choose("urgent", 60.0).version
    for case in [(None, 60.0), (None, 2000.0), ("x", 1.0)]:
        assert before.choose(*case).version == after.choose(*case).version


@pytest.mark.parametrize(
    "text, problem",
    [
        ("rules: [{name: a, use: {beam: 5}}]", "rules.0.use.beam"),
        ("rules: [{name: a, when: {min_seconds: 60, max_seconds: 30}, use: {}}]", "max_seconds must be above min_seconds"),
        ("rules: [{name: a, use: {}}, {name: a, use: {}}]", "unique"),
        ("rules: [{name: a, use: {packing: sideways}}]", "rules.0.use.packing"),
        ("rules: [{name: a b, use: {}}]", "rules.0.name"),
        ("rules: [", "not valid YAML"),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_key_that_is_wrong(tmp_path, monkeypatch, text, problem):
    path = _policy(tmp_path, text)
    with pytest.raises(PolicyError, match=problem):
        load_policy(path, BASE)
    monkeypatch.setenv("DIARY_TRANSCRIPTION_POLICY", str(path))
    with pytest.raises(ConfigurationError, match="DIARY_TRANSCRIPTION_POLICY"):
        Settings()


def test_the_priority_tag_is_the_folder_below_the_users():
    assert priority_of("ann/urgent/monday.m4a") == "urgent"
    assert priority_of("ann/urgent/2026/monday.m4a") == "urgent"
    assert priority_of("ann/monday.m4a") is None and priority_of("monday.m4a") is None


def _model_folder(tmp_path):
    """Another CTranslate2 Whisper model folder (the bundled files under another name): another identity."""
    bundled = resolve_model("bundled")[0]
    folder = tmp_path / "tiny-copy"
    folder.mkdir()
    for entry in Path(bundled).iterdir():
        (folder / entry.name).symlink_to(entry)
    return folder


def test_a_tagged_upload_goes_to_the_model_of_its_rule_and_a_policy_change_marks_exactly_its_batch(settings, tmp_path, clips, monkeypatch):
    folder = _model_folder(tmp_path)
    monkeypatch.setenv("DIARY_TRANSCRIPTION_POLICY", str(_policy(tmp_path, f"rules: [{{name: urgent, when: {{priority: [urgent]}}, use: {{model: '{folder}'}}}}]")))
    monkeypatch.setenv("DIARY_BATCH_MAX_FILES", "2")
    settings = Settings()
    drop(settings.landing_dir, "ann", clips[0].path, name=f"urgent/{clips[0].path.name}")
    drop(settings.landing_dir, "ann", clips[1].path)
    drop(settings.landing_dir, "bob", clips[2].path)
    drop(settings.landing_dir, "bob", clips[3].path)
    resources = build_resources(settings)
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, resources, None).cursor
        requests = _tick(instance, resources, cursor).run_requests
        assert len(requests) == 2
        for request in requests:
            assert dg.materialize(batch.assets(settings), partition_key=request.partition_key, instance=instance, resources=resources).success
        catalog = Catalog(open_store(settings))
        table = catalog.every_batch(TRANSCRIPTS)
        rows = {row["priority"]: row for row in table.filter(table["user"] == "ann").iter_rows(named=True)}
        assert rows["urgent"]["policy_rule"] == "urgent" and rows["urgent"]["model"] == resolve_model(str(folder))[1]
        assert rows[None]["policy_rule"] == DEFAULT_RULE and rows[None]["model"] == resolve_model("bundled")[1]
        assert rows["urgent"]["text"] and rows[None]["text"]
        assert stale_batches(settings.policy(), table) == {}

        monkeypatch.setenv("DIARY_TRANSCRIPTION_POLICY", str(_policy(tmp_path, "rules: [{name: urgent, when: {priority: [urgent]}, use: {beam_size: 5}}]", "v2.yaml")))
        changed = Settings()
        stale = stale_batches(changed.policy(), table)
        assert stale == {rows["urgent"]["batch_key"]: 1}, "only the batch holding the tagged recording, and only it"

        instance.delete_dynamic_partition(BATCHES, rows["urgent"]["batch_key"])  # as retention does to old batches
        report = retranscribe(changed, instance, list(stale))
        assert {r.origin for r in report.results} == {"retranscribed"} and all(r.transcript for r in report.results)
        again = catalog.every_batch(TRANSCRIPTS)
        assert stale_batches(changed.policy(), again) == {}
        urgent = again.filter(again["priority"] == "urgent").row(0, named=True)
        assert urgent["model"] == resolve_model("bundled")[1] and urgent["policy_rule"] == "urgent"


def test_the_example_policy_loads():
    example = Path(__file__).parent.parent / "diary_platform" / "config" / "transcription_policy.example.yaml"
    policy = load_policy(example, BASE)
    assert [rule.name for rule in policy.rules] == ["urgent", "long"]
    assert policy.choose("urgent", 60.0).config.beam_size == 5
