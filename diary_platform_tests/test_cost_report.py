"""The cost report: known inputs give known totals; a real day's report and its budget check."""

from datetime import datetime, timedelta, timezone
from importlib import resources

import dagster as dg
import polars as pl
import pytest

from diary_platform.daily.cost_report import budget_warning, cost_report_asset, within_daily_budget
from diary_platform.domain.costs import PlatformPrices, recording_costs
from diary_platform.domain.notes.spend import TokenUsage, call_cost, load_prices
from diary_platform.domain.costs import cost_report as build_report
from diary_platform.definitions import build_resources
from diary_platform.resources import PlatformPricing
from diary_platform.runner import process_files
from diary_platform_tests.conftest import run_job

PRICES = PlatformPrices(
    cpu_usd_per_second=0.001, gpu_usd_per_second=0.01, storage_usd_per_gb_month={"hot": 3.0, "warm": 1.5, "cold": 0.3}, daily_budget_usd=1.0
)
MODELS = {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}


def test_the_report_shows_what_batches_and_caching_saved_per_user_and_day():
    """A hand-computed day. ann: a batch note (1M in, 0.2M out of gpt-4o-mini: list 0.15 + 0.12 = 0.27,
    booked at half, 0.135, saved 0.135) and a synchronous one with 0.5M of its 1M input read from the
    cache (0.5 x 0.15 + 0.5 x 0.075 = 0.1125, list 0.15, saved 0.0375); bob: one list-price note of 0.15."""
    ids = ["a1", "a2", "b1"]
    notes = pl.DataFrame({
        "recording_id": ids, "user": ["ann", "ann", "bob"], "model": ["gpt-4o-mini"] * 3,
        "input_tokens": [1_000_000, 1_000_000, 1_000_000], "cached_input_tokens": [0, 500_000, 0],
        "output_tokens": [200_000, 0, 0], "cost_usd": [0.135, 0.1125, 0.15], "saved_usd": [0.135, 0.0375, 0.0],
    })
    prices = load_prices()
    assert call_cost(prices, "gpt-4o-mini", TokenUsage(1_000_000, 200_000, batch=True)) == pytest.approx(0.135)
    assert call_cost(prices, "gpt-4o-mini", TokenUsage(1_000_000, 0, cached_input_tokens=500_000)) == pytest.approx(0.1125)
    report = build_report(recording_costs({"diary_notes": notes}, {}, PRICES, MODELS, gpu=False))
    rows = {row["user"]: row for row in report.iter_rows(named=True)}
    assert rows["ann"]["llm_usd"] == pytest.approx(0.2475) and rows["ann"]["llm_saved_usd"] == pytest.approx(0.1725)
    assert rows["ann"]["llm_cached_input_tokens"] == 500_000
    assert rows["bob"]["llm_saved_usd"] == 0
    assert rows["(total)"]["llm_usd"] == pytest.approx(0.3975) and rows["(total)"]["llm_saved_usd"] == pytest.approx(0.1725)
    assert rows["(total)"]["total_usd"] == pytest.approx(0.3975), "savings are reported beside the cost, never subtracted twice"


def test_known_inputs_give_the_expected_costs_per_recording_and_totals_per_user():
    ids = ["a1", "a2", "b1"]
    tables = {
        "validated_audio": pl.DataFrame({"recording_id": ids, "user": ["ann", "ann", "bob"], "decode_seconds": [1.0, 2.0, 3.0]}),
        "transcripts": pl.DataFrame({
            "recording_id": ids, "user": ["ann", "ann", "bob"],
            "audio_seconds": [1800.0, 1800.0, 900.0], "processing_seconds": [10.0, 20.0, 30.0],
        }),
        "diary_notes": pl.DataFrame({
            "recording_id": ids, "user": ["ann", "ann", "bob"], "model": ["gpt-4o-mini", "extractive-v1", "gpt-4o-mini"],
            "input_tokens": [2_000_000, 0, 1_000_000], "output_tokens": [1_000_000, 0, 0],
        }),
    }
    stored = {"a1": {"hot": 1024**3}, "b1": {"warm": 0}}
    costs = recording_costs(tables, stored, PRICES, MODELS, gpu=False)
    by_id = {row["recording_id"]: row for row in costs.iter_rows(named=True)}
    assert by_id["a1"]["compute_usd"] == pytest.approx(11 * 0.001)
    assert by_id["a1"]["total_usd"] == pytest.approx(0.011 + 2 * 0.15 + 1 * 0.60 + 3.0 / 30)
    assert by_id["a2"]["total_usd"] == pytest.approx(0.022) and by_id["a2"]["llm_usd"] == 0
    report = build_report(costs)
    rows = {row["user"]: row for row in report.iter_rows(named=True)}
    ann, bob, total = rows["ann"], rows["bob"], rows["(total)"]
    assert ann["recordings"] == 2 and ann["compute_usd"] == pytest.approx(33 * 0.001)
    assert ann["llm_usd"] == pytest.approx(2 * 0.15 + 1 * 0.60)
    assert ann["storage_usd"] == pytest.approx(3.0 / 30)
    assert ann["total_usd"] == pytest.approx(0.033 + 0.9 + 0.1)
    assert ann["usd_per_audio_hour"] == pytest.approx(1.033)
    assert bob["total_usd"] == pytest.approx(0.033 + 0.15) and bob["audio_hours"] == pytest.approx(0.25)
    assert total["total_usd"] == pytest.approx(1.033 + 0.183)
    assert total["usd_per_audio_hour"] == pytest.approx(1.216 / 1.25)
    tiered = build_report(recording_costs(tables, {"a1": {"hot": 1024**3 // 2, "cold": 1024**3}}, PRICES, MODELS, gpu=False))
    assert tiered.filter(pl.col("user") == "ann")["storage_usd"][0] == pytest.approx((0.5 * 3.0 + 0.3) / 30)
    assert tiered.filter(pl.col("user") == "ann")["storage_bytes"][0] == 1024**3 * 3 // 2
    gpu = build_report(recording_costs(tables, {}, PRICES, MODELS, gpu=True))
    assert gpu.filter(pl.col("user") == "ann")["compute_usd"][0] == pytest.approx(3 * 0.001 + 30 * 0.01), "decoding stays on CPU"


def test_a_recording_processed_in_two_batches_pays_compute_twice_and_storage_once():
    first, redriven = "090000-20261126-aaaaaaaa", "100000-20261126-bbbbbbbb"
    validated = pl.DataFrame({"batch_key": [first, redriven], "recording_id": ["a1", "a1"], "user": ["ann", "ann"],
                              "decode_seconds": [1.0, 2.0]})
    costs = recording_costs({"validated_audio": validated}, {"a1": {"hot": 1024**3}}, PRICES, MODELS, gpu=False)
    by_batch = {row["batch_key"]: row for row in costs.iter_rows(named=True)}
    assert by_batch[first]["compute_usd"] == pytest.approx(0.001) and by_batch[redriven]["compute_usd"] == pytest.approx(0.002)
    assert (by_batch[first]["storage_usd"], by_batch[redriven]["storage_usd"]) == (0.0, pytest.approx(3.0 / 30))
    [ann] = build_report(costs).filter(pl.col("user") == "ann").rows(named=True)
    assert ann["recordings"] == 2 and ann["total_usd"] == pytest.approx(0.003 + 0.1)


def test_a_batch_that_has_only_been_ingested_has_rows_and_no_cost_yet():
    raw = pl.DataFrame({"recording_id": ["a1"], "user": ["ann"]})
    costs = recording_costs({"raw_audio": raw}, {}, PRICES, MODELS, gpu=False)
    assert costs.select("recording_id", "total_usd").rows() == [("a1", 0.0)]
    assert build_report(costs.clear()).rows(named=True)[0]["user"] == "(total)"


def test_the_day_report_of_the_examples_and_its_budget_check(settings, clips):
    resources = build_resources(settings)
    cost_report = cost_report_asset(settings)
    with dg.instance_for_test() as instance:
        report = process_files([c.path for c in clips[:3]], "alice", settings, instance)
        day = datetime.now(timezone.utc).date().isoformat()
        result = dg.materialize([cost_report, within_daily_budget], partition_key=day, instance=instance, resources=resources)
        table = result.output_for_node("cost_report")
        total = table.filter(pl.col("user") == "(total)").row(0, named=True)
        audio_hours = sum(r.audio_seconds for r in report.results) / 3600
        assert total["audio_hours"] == pytest.approx(audio_hours, rel=1e-6)
        assert total["compute_usd"] > 0 and total["storage_usd"] > 0 and total["llm_usd"] == 0
        assert total["usd_per_audio_hour"] == pytest.approx(total["total_usd"] / audio_hours)
        metadata = result.asset_materializations_for_node("cost_report")[0].metadata
        assert metadata["usd_per_audio_hour"].value == pytest.approx(total["usd_per_audio_hour"], rel=1e-3)
        rows = {record.data["user"]: record.data for record in metadata["report"].value.records}
        assert set(rows) == {"alice", "(total)"} and rows["(total)"]["recordings"] == 3

        later = (datetime.now(timezone.utc) + timedelta(days=31)).isoformat()
        run_job(settings, "storage_job", instance, run_config={"ops": {"storage_tiers": {"config": {"as_of": later}}}})
        again = dg.materialize([cost_report], partition_key=day, instance=instance, resources=resources)
        moved = again.output_for_node("cost_report").filter(pl.col("user") == "(total)").row(0, named=True)
        prices = PlatformPrices.load().storage_usd_per_gb_month
        assert moved["storage_bytes"] == total["storage_bytes"]
        assert moved["storage_usd"] == pytest.approx(total["storage_usd"] * prices["warm"] / prices["hot"])
        [check] = result.get_asset_check_evaluations()
        assert check.passed and check.severity == dg.AssetCheckSeverity.WARN



def test_the_budget_check_warns_when_the_day_costs_more_than_the_budget(settings, clips, tmp_path):
    prices = tmp_path / "prices.yaml"
    default = resources.files("diary_platform.config").joinpath("platform_prices.yaml").read_text()
    with dg.instance_for_test() as instance:
        process_files([clips[0].path], "alice", settings, instance)
        day = datetime.now(timezone.utc).date().isoformat()
        outcomes = {}
        for budget in (0.0, 1000.0, "90 % spent"):
            if budget == "90 % spent":
                budget = total / 0.9
            prices.write_text(default.replace("daily_budget_usd: 5.00", f"daily_budget_usd: {budget}"))
            configured = {**build_resources(settings), "pricing": PlatformPricing(prices_file=str(prices))}
            result = dg.materialize(
                [cost_report_asset(settings), within_daily_budget, budget_warning], partition_key=day, instance=instance,
                resources=configured,
            )
            checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
            within = checks["within_daily_budget"]
            assert within.severity == checks["budget_warning"].severity == dg.AssetCheckSeverity.WARN
            assert within.metadata["budget_usd"].value == budget
            total = within.metadata["total_usd"].value
            assert total > 0
            outcomes[round(budget, 9)] = (within.passed, checks["budget_warning"].passed)
    assert outcomes == {0.0: (False, False), 1000.0: (True, True), round(total / 0.9, 9): (True, False)}, "80 % warns first"


def test_the_budget_warning_names_the_users_past_the_warning_share_of_their_note_budget(settings, clips, tmp_path, monkeypatch):
    """Notes written by a (fake) cloud model cost alice something; with her daily note budget just above it
    (past 80 %, under 100 %) the check warns and names her; with ten times that it passes."""
    from diary_platform.settings import Settings
    from diary_platform_tests.fake_llm import FakeLLM

    with FakeLLM() as fake, dg.instance_for_test() as instance:
        config = tmp_path / "llm.yaml"
        provider = f"providers:\n  - {{name: openai, kind: openai, models: [gpt-4o-mini], api_key_env: OPENAI_API_KEY, base_url: \"{fake.openai_url}\"}}\n"
        config.write_text(provider)
        monkeypatch.setenv("DIARY_LLM_CONFIG", str(config))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        settings = Settings()
        process_files([clips[0].path], "alice", settings, instance)
        day = datetime.now(timezone.utc).date().isoformat()

        def evaluate(budget: float) -> tuple[pl.DataFrame, dg.AssetCheckEvaluation]:
            config.write_text(provider + f"budget_usd_per_user_per_day: {budget}\n")
            result = dg.materialize([cost_report_asset(settings), budget_warning], partition_key=day, instance=instance,
                                    resources=build_resources(settings))
            [check] = result.get_asset_check_evaluations()
            return result.output_for_node("cost_report"), check

        report, _ = evaluate(100.0)
        spent = report.filter(pl.col("user") == "alice")["llm_usd"][0]
        assert spent > 0
        _, near = evaluate(spent / 0.85)
        _, far = evaluate(spent * 10)
    assert (near.passed, near.metadata["users_near_their_budget"].value) == (False, "alice")
    assert (far.passed, far.metadata["users_near_their_budget"].value) == (True, "none")


def test_prices_written_in_exponent_notation_are_numbers(tmp_path):
    """YAML 1.1 reads 2e-05 (no decimal point) as a string: both price files still give numbers."""
    default = resources.files("diary_platform.config").joinpath("platform_prices.yaml").read_text()
    assert PlatformPrices.load(default.replace("daily_budget_usd: 5.00", "daily_budget_usd: 2e-05")).daily_budget_usd == 2e-05
    own = tmp_path / "prices.yaml"
    own.write_text("m: {input: 5e-01, output: 1}\n")
    assert call_cost(load_prices(own), "m", TokenUsage(1_000_000, 1_000_000)) == pytest.approx(1.5)
