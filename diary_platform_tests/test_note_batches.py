"""Notes that wait: priorities and routes, provider batches through the real SDKs against the fake server,
the poller, and the prices of batch answers and cached prompts."""

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

from diary_platform.batch.note_batches import COLLECT_TAG, note_batches_sensor
from diary_platform.definitions import build_definitions, build_resources

from diary_platform.domain.notes.batch_poller import poll_round
from diary_platform.domain.notes.note_batches import COLLECTED, ENDED, OPEN
from diary_platform.domain.notes.note import NoteRequest
from diary_platform.domain.notes.providers import ProviderSpec
from diary_platform.domain.notes.router import NoteRouter, PriorityRoute, RouterConfig, LongTranscripts
from diary_platform.domain.notes.spend import TokenUsage, call_cost, list_cost, load_prices
from diary_platform.domain.schemas import STATUS_OK, STATUS_PENDING, TRANSCRIPTS, blank_row, table
from diary_platform.domain.shared_state import open_shared_state
from diary_platform.domain.stages import write_notes
from diary_platform.domain.store.layout import DataStore
from diary_platform.settings import Settings
from diary_platform_tests.conftest import new_batch, run_job
from diary_platform_tests.fake_llm import ANTHROPIC, OPENAI, FakeLLM

GPT, GPT_LONG, SONNET, HAIKU = "gpt-4o-mini", "gpt-4.1-mini", "claude-sonnet-4-5", "claude-haiku-4-5"
KEYS = {"OPENAI_API_KEY": "sk-test-key", "ANTHROPIC_API_KEY": "sk-ant-test-key"}
WHEN = datetime(2026, 11, 26, 18, 0, tzinfo=timezone.utc)
BATCH_KEY = "2026-11-26T18:00:00-0001"


@pytest.fixture(scope="module")
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake):
    fake.log.clear()
    fake.scripts.clear()
    fake.batch_mode("complete")


def routed(fake, tmp_path, normal=(f"openai/{GPT}",), **overrides) -> NoteRouter:
    providers = (
        ProviderSpec("openai", "openai", (GPT,), "OPENAI_API_KEY", fake.openai_url),
        ProviderSpec("anthropic", "anthropic", (HAIKU,), "ANTHROPIC_API_KEY", fake.anthropic_url),
    )
    priorities = {
        "urgent": PriorityRoute(chain=(f"anthropic/{SONNET}", f"openai/{GPT_LONG}")),
        "normal": PriorityRoute(chain=normal, batch=True),
        "bulk": PriorityRoute(chain=(f"openai/{GPT}",), batch=True, long=LongTranscripts(over_tokens=200, chain=(f"openai/{GPT_LONG}",))),
    }
    config = RouterConfig(providers=providers, priorities=priorities, call_timeout_seconds=2.0, max_retries=1, **overrides)
    return NoteRouter(config, open_shared_state(tmp_path / "state"), environ=KEYS)


def segments(words: int = 12, start: int = 0) -> list[dict]:
    text = " ".join(["walked"] * words)
    return [{"start": float(start), "end": start + 3.0, "text": f"I met Anna and {text}.", "avg_logprob": -0.2,
             "no_speech_prob": 0.01, "compression_ratio": 1.2}]


def transcripts(count: int, priority: str | None = None, user: str = "alice") -> pl.DataFrame:
    rows = []
    for index in range(count):
        said = segments(start=index)
        rows.append({
            **blank_row(TRANSCRIPTS), "recording_id": f"{index:024x}", "content_sha256": f"{index:064x}", "batch_key": BATCH_KEY,
            "user": user, "priority": priority, "recorded_at": WHEN, "status": STATUS_OK, "text": said[0]["text"], "segments": said,
            "model": "tiny.en", "compute_type": "int8", "policy_rule": "default", "transcriber_version": "v",
        })
    return table(TRANSCRIPTS, rows)


def created(fake, api: str) -> int:
    return sum(1 for entry in fake.log if entry["api"] == f"{api}_batches" and entry.get("action") == "create")


def collect_all(router: NoteRouter, store: DataStore, transcribed: pl.DataFrame, notes: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """What the sensor and the collect run do: poll until every batch has ended, then write the table again."""
    def waiting(record):
        return notes.filter((pl.col("status") == STATUS_PENDING) & (pl.col("note_batch") == record.id)).height

    for _ in range(12):
        round_ = poll_round(router, router.state.note_batches, waiting, now)
        if round_.to_collect:
            return write_notes(transcribed, router, store, previous=notes, now=now)
        now += timedelta(hours=1)
    raise AssertionError("no batch ended")


def test_priority_comes_from_the_landing_tag_then_the_user_then_the_default(fake, tmp_path):
    router = routed(fake, tmp_path, priority_by_user={"bob": "urgent"})
    request = NoteRequest("r" * 24, "alice", WHEN, "I walked.", segments())
    assert router.plan(request).priority == "normal"
    assert router.plan(replace(request, priority="bulk")).priority == "bulk"
    assert router.plan(replace(request, priority="holiday")).priority == "normal", "a tag that is no priority is ignored"
    assert router.plan(replace(request, user="bob")).priority == "urgent"
    assert router.plan(replace(request, user="bob", priority="bulk")).priority == "bulk", "the recording's own tag wins"


def test_urgent_is_written_at_once_by_the_best_model_and_a_long_bulk_transcript_by_the_cheap_one(fake, tmp_path):
    router = routed(fake, tmp_path)
    urgent = router.write(NoteRequest("u" * 24, "alice", WHEN, "I walked.", segments(), priority="urgent"))
    assert (urgent.provider, urgent.model, urgent.priority, urgent.route, urgent.delivery) == ("anthropic", SONNET, "urgent", "urgent", "synchronous")
    assert [r["model"] for r in fake.log] == [SONNET]
    assert router.waits_for(NoteRequest("u" * 24, "alice", WHEN, "I walked.", segments(), priority="urgent")) is None
    long_bulk = NoteRequest("b" * 24, "alice", WHEN, "x " * 1000, segments(words=500), priority="bulk")
    assert router.plan(long_bulk).route == "bulk/long"
    assert router.waits_for(long_bulk) == ("openai", GPT_LONG)
    short_bulk = replace(long_bulk, transcript="I walked.", segments=segments())
    assert router.waits_for(short_bulk) == ("openai", GPT)
    with pytest.raises(ValueError, match="urgent notes are written at once"):
        RouterConfig(priorities={"urgent": PriorityRoute(batch=True)})


def test_a_completed_batch_fills_the_pending_notes_at_the_batch_price_and_never_writes_one_twice(fake, tmp_path):
    router, store = routed(fake, tmp_path), DataStore(tmp_path / "data")
    transcribed = pl.concat([transcripts(3), transcripts(1, priority="urgent").with_columns(recording_id=pl.lit("f" * 24))])
    first = write_notes(transcribed, router, store, now=WHEN)
    assert created(fake, OPENAI) == 1
    pending = first.filter(pl.col("status") == STATUS_PENDING)
    assert pending.height == 3 and pending["note_batch"].n_unique() == 1 and set(pending["delivery"]) == {"batch"}
    urgent = first.filter(pl.col("note_priority") == "urgent").row(0, named=True)
    assert (urgent["status"], urgent["delivery"], urgent["model"]) == ("ok", "synchronous", SONNET)
    again = write_notes(transcribed, router, store, now=WHEN)
    assert created(fake, OPENAI) == 1, "a step run again finds its record: the same work is never submitted twice"
    assert again.filter(pl.col("status") == STATUS_PENDING)["note_batch"].to_list() == pending["note_batch"].to_list()

    fake.log.clear()
    done = collect_all(router, store, transcribed, first, WHEN)
    assert (done["status"] == STATUS_OK).all()
    assert not [r for r in fake.log if r["api"] in (OPENAI, ANTHROPIC) and "batch" not in r], "no synchronous call: every answer came from the batch"
    kept = done.filter(pl.col("note_priority") == "urgent").row(0, named=True)
    assert kept["markdown"] == urgent["markdown"] and kept["cost_usd"] == urgent["cost_usd"], "the written note is kept, not written again"
    prices = load_prices()
    for row in done.filter(pl.col("delivery") == "batch").iter_rows(named=True):
        usage = TokenUsage(row["input_tokens"], row["output_tokens"], batch=True)
        assert row["cost_usd"] == pytest.approx(call_cost(prices, GPT, usage), abs=1e-6)
        assert row["cost_usd"] == pytest.approx(list_cost(prices, GPT, usage) / 2, abs=1e-6)
        assert row["saved_usd"] == pytest.approx(row["cost_usd"], abs=1e-6), "half price: the saving equals the cost"
        assert row["fallback_path"] == [f"openai/{GPT}:batch_ok"] and row["note_batch"] and row["title"]
    record = router.state.note_batches.get(pending["note_batch"][0])
    assert record.status == ENDED
    poll_round(router, router.state.note_batches, lambda r: done.filter(pl.col("status") == STATUS_PENDING).height, WHEN + timedelta(days=1))
    assert router.state.note_batches.get(record.id).status == COLLECTED


@pytest.mark.parametrize(("provider", "model"), [("openai", GPT), ("anthropic", HAIKU)])
def test_an_expired_batch_writes_its_unanswered_notes_at_once(fake, tmp_path, provider, model):
    fake.batch_mode("expire")
    fake.batch_expire_answered = 1
    router, store = routed(fake, tmp_path, normal=(f"{provider}/{model}",)), DataStore(tmp_path / "data")
    transcribed = transcripts(3)
    done = collect_all(router, store, transcribed, write_notes(transcribed, router, store, now=WHEN), WHEN)
    fake.batch_expire_answered = 0
    assert (done["status"] == STATUS_OK).all()
    paths = sorted(done["fallback_path"].to_list())
    assert paths.count([f"{provider}/{model}:batch_ok"]) == 1
    assert paths.count([f"{provider}/{model}:batch_expired", f"{provider}/{model}:ok"]) == 2
    assert sorted(done["delivery"].to_list()) == ["batch", "synchronous", "synchronous"]


@pytest.mark.parametrize(("provider", "model", "why"), [("openai", GPT, "missing"), ("anthropic", HAIKU, "rejected")])
def test_a_failed_batch_has_every_note_written_at_once(fake, tmp_path, provider, model, why):
    fake.batch_mode("fail")
    router, store = routed(fake, tmp_path, normal=(f"{provider}/{model}",)), DataStore(tmp_path / "data")
    transcribed = transcripts(2)
    done = collect_all(router, store, transcribed, write_notes(transcribed, router, store, now=WHEN), WHEN)
    assert (done["status"] == STATUS_OK).all() and set(done["delivery"]) == {"synchronous"}
    assert done["fallback_path"].to_list() == [[f"{provider}/{model}:batch_{why}", f"{provider}/{model}:ok"]] * 2


def test_failed_items_fall_back_alone_and_a_broken_answer_is_not_trusted(fake, tmp_path):
    fake.script(OPENAI, GPT, "ok", "server_error", "schema_break")
    router, store = routed(fake, tmp_path), DataStore(tmp_path / "data")
    transcribed = transcripts(3)
    done = collect_all(router, store, transcribed, write_notes(transcribed, router, store, now=WHEN), WHEN)
    assert (done["status"] == STATUS_OK).all() and done["title"].is_not_null().all()
    paths = [p[0] for p in done["fallback_path"].to_list()]
    assert sorted(paths) == sorted([f"openai/{GPT}:batch_ok", f"openai/{GPT}:batch_unavailable", f"openai/{GPT}:batch_invalid_output"])


def test_a_provider_restart_between_submit_and_poll_is_waited_out_from_the_recorded_batch_id(fake, tmp_path):
    fake.batch_mode("hold")
    router, store = routed(fake, tmp_path, normal=(f"anthropic/{HAIKU}",)), DataStore(tmp_path / "data")
    transcribed = transcripts(2)
    first = write_notes(transcribed, router, store, now=WHEN)
    [batch_id] = first["note_batch"].unique().to_list()
    fake.stop()
    try:
        round_ = poll_round(router, router.state.note_batches, lambda r: 2, WHEN + timedelta(minutes=2))
    finally:
        fake.start_again()
    assert (round_.asked, round_.unreachable, round_.to_collect) == (1, 1, [])
    record = router.state.note_batches.get(batch_id)
    assert record.status == OPEN and record.polls == 1 and record.next_poll_at > WHEN + timedelta(minutes=2)
    fake.restart()
    fake.finish_batches()
    done = collect_all(router, store, transcribed, first, WHEN + timedelta(hours=1))
    assert (done["status"] == STATUS_OK).all() and set(done["model"]) == {HAIKU}
    assert created(fake, ANTHROPIC) == 1


def test_a_run_killed_after_submitting_neither_loses_nor_resubmits_the_batch(fake, tmp_path, monkeypatch):
    router, store = routed(fake, tmp_path), DataStore(tmp_path / "data")
    transcribed = transcripts(2)
    batches = router.state.note_batches
    real_save = batches.save

    def killed(record):
        raise SystemExit("killed after the provider accepted the batch, before its id was recorded")

    monkeypatch.setattr(batches, "save", killed)
    with pytest.raises(SystemExit):
        write_notes(transcribed, router, store, now=WHEN)
    monkeypatch.setattr(batches, "save", real_save)
    assert created(fake, OPENAI) == 1
    rerun = write_notes(transcribed, router, store, now=WHEN)
    assert created(fake, OPENAI) == 1, "the rerun found the provider's batch by its metadata"
    assert (rerun["status"] == STATUS_PENDING).all()
    done = collect_all(router, store, transcribed, rerun, WHEN)
    assert (done["status"] == STATUS_OK).all() and set(done["delivery"]) == {"batch"}


def test_a_batch_the_provider_never_ends_is_written_another_way_after_its_window(fake, tmp_path):
    fake.batch_mode("hold")
    router, store = routed(fake, tmp_path), DataStore(tmp_path / "data")
    transcribed = transcripts(1)
    first = write_notes(transcribed, router, store, now=WHEN)
    round_ = poll_round(router, router.state.note_batches, lambda r: 1, WHEN + timedelta(hours=26))
    assert len(round_.to_collect) == 1 and round_.to_collect[0].outcome == "overdue"
    done = write_notes(transcribed, router, store, previous=first, now=WHEN + timedelta(hours=26))
    assert done["status"].to_list() == [STATUS_OK] and done["delivery"].to_list() == ["synchronous"]
    assert fake.batches(OPENAI)[-1]["status"] in ("cancelling", "cancelled"), "the late batch is cancelled, not paid for twice"


def test_no_batch_when_the_budget_is_spent_or_only_local_providers_may_be_used(fake, tmp_path):
    router = routed(fake, tmp_path, budget_usd_per_user_per_day=0.0)
    request = NoteRequest("r" * 24, "alice", WHEN, "I walked.", segments())
    assert router.waits_for(request) is None
    assert routed(fake, tmp_path / "local", local_only=True).waits_for(request) is None
    assert routed(fake, tmp_path / "ok").waits_for(request) == ("openai", GPT)


def test_cached_prompt_tokens_are_counted_and_priced_at_the_cached_rate(fake, tmp_path):
    fake.cache_min_tokens = 100
    router = routed(fake, tmp_path)
    request = NoteRequest("r" * 24, "alice", WHEN, "I walked.", segments(), priority="urgent")
    first, second = router.write(request), router.write(request)
    sent = fake.requests(ANTHROPIC, SONNET)[0]["body"]
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}, "the stable prefix is marked for the cache"
    assert first.cached_input_tokens == 0 and second.cached_input_tokens > 0
    assert second.input_tokens == first.input_tokens, "input counts every prompt token, cached or not"
    prices = load_prices()
    usage = TokenUsage(second.input_tokens, second.output_tokens, cached_input_tokens=second.cached_input_tokens)
    assert second.cost_usd == pytest.approx(call_cost(prices, SONNET, usage), abs=1e-6)
    assert second.saved_usd == pytest.approx(list_cost(prices, SONNET, usage) - second.cost_usd, abs=1e-6) and second.saved_usd > 0
    fake.cache_min_tokens = 1024


def test_batch_and_cache_prices_on_a_hand_computed_example():
    prices = {"m": {"input": 2.0, "cached_input": 0.5, "cache_write": 2.5, "output": 8.0, "batch_share": 0.5}}
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=600_000, cache_write_tokens=100_000)
    # 300k uncached x 2 + 600k cached x 0.5 + 100k written x 2.5 + 100k out x 8 = 0.6 + 0.3 + 0.25 + 0.8
    assert call_cost(prices, "m", usage) == pytest.approx(1.95)
    assert call_cost(prices, "m", replace(usage, batch=True)) == pytest.approx(0.975)
    assert list_cost(prices, "m", usage) == pytest.approx(2.8)
    assert call_cost(prices, "local-model", usage) == 0.0


def test_the_sensor_asks_for_a_collect_run_that_completes_the_partition(fake, tmp_path, monkeypatch, clips, settings):
    """The Dagster shape: process_batch materializes `diary_notes` with pending rows, the sensor polls the
    provider batch and requests `collect_notes` for the partition, whose run materializes the whole table."""
    config = tmp_path / "llm.yaml"
    config.write_text(
        f"""
providers:
  - {{name: openai, kind: openai, models: [{GPT}], api_key_env: OPENAI_API_KEY, base_url: "{fake.openai_url}"}}
priorities:
  normal: {{chain: [openai/{GPT}], batch: true}}
"""
    )
    monkeypatch.setenv("DIARY_LLM_CONFIG", str(config))
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    manifest = new_batch(settings, [clips[0].path, clips[1].path])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", [manifest.key])
        first = run_job(settings, "process_batch", instance, partition_key=manifest.key).output_for_node("diary_notes")
        assert first["status"].to_list() == [STATUS_PENDING] * 2 and created(fake, OPENAI) == 1
        state = open_shared_state(settings.data_dir)
        [record] = state.note_batches.due(datetime.now(timezone.utc) + timedelta(minutes=5), 10)
        state.note_batches.save(replace(record, next_poll_at=datetime.now(timezone.utc)))  # its first poll is due
        definitions = build_definitions(settings)
        with dg.build_sensor_context(instance=instance, resources=build_resources(settings), definitions=definitions) as context:
            [request] = note_batches_sensor(context).run_requests
        assert request.partition_key == manifest.key and request.tags[COLLECT_TAG] == record.id
        run = run_job(settings, "collect_notes", instance, partition_key=request.partition_key, tags=request.tags)
        notes = run.output_for_node("diary_notes")
        assert notes["status"].to_list() == [STATUS_OK] * 2 and set(notes["delivery"]) == {"batch"}
        assert (notes["cost_usd"] > 0).all() and (notes["saved_usd"] > 0).all()
        materialized = instance.fetch_materializations(dg.AssetKey("diary_notes"), limit=5).records
        assert len(materialized) == 2, "one materialization with the pending rows, one complete"
        state.note_batches.save(replace(state.note_batches.get(record.id), next_poll_at=datetime.now(timezone.utc)))
        with dg.build_sensor_context(instance=instance, resources=build_resources(settings), definitions=definitions) as context:
            assert note_batches_sensor(context).run_requests == []
        assert state.note_batches.get(record.id).status == COLLECTED
    assert created(fake, OPENAI) == 1


def test_diary_run_killed_right_after_submitting_is_resumed_without_a_second_batch(fake, tmp_path, clips):
    """SIGKILL as soon as the provider has the batch: wherever the kill lands (before the batch id is
    recorded, or after), the next `diary run` ends with the notes pending in that one batch."""
    config = tmp_path / "llm.yaml"
    config.write_text(
        f"providers:\n  - {{name: openai, kind: openai, models: [{GPT}], api_key_env: OPENAI_API_KEY, base_url: \"{fake.openai_url}\"}}\n"
        f"priorities:\n  normal: {{chain: [openai/{GPT}], batch: true}}\n"
    )
    env = {**os.environ, "DIARY_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home"),
           "DIARY_LLM_CONFIG": str(config), **KEYS}
    (tmp_path / "home").mkdir()
    diary = str(Path(sys.executable).parent / "diary")
    files = [str(clips[0].path), str(clips[1].path)]
    process = subprocess.Popen([diary, "run", *files], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while created(fake, OPENAI) == 0:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no batch was submitted"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rerun = subprocess.run([diary, "run", *files, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    results = [json.loads(line) for line in rerun.stdout.splitlines()]
    assert [r["status"] for r in results] == ["pending", "pending"], results
    assert created(fake, OPENAI) == 1, "the same work is never submitted twice"
    assert all("waits in openai's batch" in r["message"] for r in results)


def test_a_template_asked_for_with_the_upload_is_the_one_the_model_gets(fake, tmp_path):
    router, store = routed(fake, tmp_path), DataStore(tmp_path / "data")
    transcribed = transcripts(2, priority="urgent")
    asked = {f"{0:024x}": "meeting"}
    notes = write_notes(transcribed, router, store, now=WHEN, template_of=lambda row: asked.get(row["recording_id"]))
    assert sorted(notes["template"].to_list()) == ["diary_entry", "meeting"]
    systems = [r["body"]["system"][0]["text"] for r in fake.requests(ANTHROPIC, SONNET)]
    assert sum("meeting minutes" in system for system in systems) == 1


@pytest.mark.parametrize("trouble", ["unreachable", "garbled"])
def test_results_that_cannot_be_had_are_written_at_once(fake, tmp_path, monkeypatch, trouble):
    """The provider said the batch ended, then its results cannot be fetched or read: nothing waits on it."""
    from diary_platform.domain.notes import batch_api
    from diary_platform.domain.notes.providers import ProviderFailure

    router, store = routed(fake, tmp_path), DataStore(tmp_path / "data")
    transcribed = transcripts(2)
    first = write_notes(transcribed, router, store, now=WHEN)

    def unreachable(provider, remote_id):
        raise ProviderFailure("unavailable", "connection refused", 1)

    def garbled(item):
        raise KeyError("choices")

    if trouble == "unreachable":
        monkeypatch.setattr(batch_api, "results", unreachable)
    else:
        monkeypatch.setattr(batch_api, "_openai_item", garbled)
    done = collect_all(router, store, transcribed, first, WHEN)
    assert (done["status"] == STATUS_OK).all() and set(done["delivery"]) == {"synchronous"}
    expected = "batch_results_unavailable" if trouble == "unreachable" else "batch_invalid_output"
    assert all(path[0] == f"openai/{GPT}:{expected}" for path in done["fallback_path"].to_list()), done["fallback_path"].to_list()
