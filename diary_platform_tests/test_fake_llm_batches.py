"""The fake LLM server's batch APIs, scenarios and prompt-cache numbers, driven by the real OpenAI and Anthropic SDKs.

Batch code in the platform is tested against this fake, so the fake has to say what the providers say; these tests
pin that down through the SDKs' own parsing.
"""

import json

import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

from diary_platform_tests.fake_llm import (
    ANTHROPIC, ANTHROPIC_BATCHES, OPENAI, OPENAI_BATCHES, FakeLLM, _transcript_of, valid_note,
)

GPT = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"
INSTRUCTIONS = "You turn transcripts of a person's voice recordings into structured notes."


def transcript(text: str) -> str:
    return f"<transcript>\n[0] 00:00.0-00:03.0 {text}\n</transcript>"


def chat_body(text: str, system: str = INSTRUCTIONS) -> dict:
    return {"model": GPT, "messages": [{"role": "system", "content": system}, {"role": "user", "content": transcript(text)}]}


def message_params(text: str, system=INSTRUCTIONS) -> dict:
    return {"model": CLAUDE, "max_tokens": 1000, "system": system, "messages": [{"role": "user", "content": transcript(text)}]}


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def gpt(fake):
    return OpenAI(api_key="k", base_url=fake.openai_url, max_retries=0)


@pytest.fixture
def claude(fake):
    return Anthropic(api_key="k", base_url=fake.anthropic_url, max_retries=0)


def submit_openai(client, texts: list[str], **metadata):
    lines = [
        {"custom_id": f"item-{index}", "method": "POST", "url": "/v1/chat/completions", "body": chat_body(text)}
        for index, text in enumerate(texts)
    ]
    upload = client.files.create(file=("notes.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode(),
                                       "application/jsonl"), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                 metadata=metadata or None)


def submit_anthropic(client, texts: list[str]):
    return client.messages.batches.create(
        requests=[{"custom_id": f"item-{index}", "params": message_params(text)} for index, text in enumerate(texts)])


def poll_until(retrieve, done, polls: int = 10):
    """Retrieves until `done` holds, returning every state seen; the fake needs no waiting, only retrieves."""
    seen = [retrieve()]
    while not done(seen[-1]) and len(seen) < polls:
        seen.append(retrieve())
    assert done(seen[-1]), seen[-1]
    return seen


def jsonl(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.splitlines()]


def actions(fake, api: str) -> list[str]:
    return [entry["action"] for entry in fake.requests(api)]


def test_openai_batch_round_trip_answers_each_item_like_a_sync_call(fake, gpt):
    fake.batch_polls_to_finish = 3
    batch = submit_openai(gpt, ["I met Anna.", "I called the dentist."], run="nightly")
    assert batch.status == "validating" and batch.request_counts.total == 2

    seen = poll_until(lambda: gpt.batches.retrieve(batch.id), lambda b: b.status == "completed")
    assert [b.status for b in seen] == ["in_progress", "in_progress", "completed"]
    done = seen[-1]
    assert (done.request_counts.completed, done.request_counts.failed, done.error_file_id) == (2, 0, None)
    assert done.metadata == {"run": "nightly"} and done.completed_at

    lines = jsonl(gpt.files.content(done.output_file_id).content)
    assert [line["custom_id"] for line in lines] == ["item-0", "item-1"]
    notes = [json.loads(line["response"]["body"]["choices"][0]["message"]["content"]) for line in lines]
    assert [note["title"] for note in notes] == ["Note: I met Anna.", "Note: I called the dentist."]
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in lines)

    sync = gpt.chat.completions.create(**chat_body("I met Anna."))
    assert json.loads(sync.choices[0].message.content) == notes[0]
    batch_items = [entry for entry in fake.requests(OPENAI, GPT) if entry.get("batch") == batch.id]
    assert [entry["custom_id"] for entry in batch_items] == ["item-0", "item-1"]
    assert actions(fake, OPENAI_BATCHES) == ["upload", "create", "retrieve", "retrieve", "retrieve", "download"]
    assert fake.batches(OPENAI) == [
        {"id": batch.id, "custom_ids": ["item-0", "item-1"], "metadata": {"run": "nightly"}, "status": "completed"}]


def test_anthropic_batch_round_trip(fake, claude):
    batch = submit_anthropic(claude, ["I met Anna.", "I walked home."])
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 2 and batch.results_url is None

    ended = claude.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at
    assert ended.request_counts.succeeded == 2 and ended.request_counts.processing == 0
    assert ended.results_url == f"{fake.anthropic_url}/v1/messages/batches/{batch.id}/results"

    results = {line.custom_id: line.result for line in claude.messages.batches.results(batch.id)}
    assert {custom_id: result.type for custom_id, result in results.items()} == {"item-0": "succeeded", "item-1": "succeeded"}
    assert results["item-1"].message.content[0].input == valid_note("[0] 00:00.0-00:03.0 I walked home.")
    assert actions(fake, ANTHROPIC_BATCHES) == ["create", "retrieve", "retrieve", "results"]
    assert len(fake.requests(ANTHROPIC, CLAUDE)) == 2


def test_held_batches_end_only_when_finished(fake, gpt, claude):
    fake.batch_mode("hold")
    openai_batch, anthropic_batch = submit_openai(gpt, ["One."]), submit_anthropic(claude, ["Two."])
    for _ in range(3):
        assert gpt.batches.retrieve(openai_batch.id).status == "in_progress"
        assert claude.messages.batches.retrieve(anthropic_batch.id).processing_status == "in_progress"
    assert fake.requests(OPENAI) == [] and fake.requests(ANTHROPIC) == [], "held items are not answered yet"

    fake.finish_batches()
    assert gpt.batches.retrieve(openai_batch.id).status == "completed"
    assert claude.messages.batches.retrieve(anthropic_batch.id).request_counts.succeeded == 1
    assert gpt.batches.retrieve(submit_openai(gpt, ["Three."]).id).status == "in_progress", "the mode stays on"


def test_expired_batches_answer_only_the_first_items(fake, gpt, claude):
    fake.batch_mode("expire")
    fake.batch_expire_answered = 1
    expired = gpt.batches.retrieve(submit_openai(gpt, ["A.", "B.", "C."]).id)
    assert expired.status == "expired" and expired.expired_at
    assert (expired.request_counts.completed, expired.request_counts.failed) == (1, 0)
    assert [line["custom_id"] for line in jsonl(gpt.files.content(expired.output_file_id).content)] == ["item-0"]
    errors = jsonl(gpt.files.content(expired.error_file_id).content)
    assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in errors] == [
        ("item-1", None, "batch_expired"), ("item-2", None, "batch_expired")]

    batch = submit_anthropic(claude, ["A.", "B.", "C."])
    ended = claude.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.expired) == (1, 2)
    assert [line.result.type for line in claude.messages.batches.results(batch.id)] == ["succeeded", "expired", "expired"]
    assert len(fake.requests(OPENAI)) == len(fake.requests(ANTHROPIC)) == 1, "only answered items reach the model"


def test_scripted_faults_fail_single_items(fake, gpt, claude):
    fake.script(OPENAI, GPT, "rate_limit", "schema_break")
    done = gpt.batches.retrieve(submit_openai(gpt, ["A.", "B.", "C."]).id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    [failed] = jsonl(gpt.files.content(done.error_file_id).content)
    assert failed["custom_id"] == "item-0" and failed["error"] is None
    assert failed["response"]["status_code"] == 429
    assert failed["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    broken, fine = jsonl(gpt.files.content(done.output_file_id).content)
    assert json.loads(broken["response"]["body"]["choices"][0]["message"]["content"]) == {"title": "Missing everything else"}
    assert json.loads(fine["response"]["body"]["choices"][0]["message"]["content"])["title"] == "Note: C."

    fake.script(ANTHROPIC, CLAUDE, "ok", "bad_request")
    batch = submit_anthropic(claude, ["A.", "B."])
    assert claude.messages.batches.retrieve(batch.id).request_counts.errored == 1
    ok, errored = claude.messages.batches.results(batch.id)
    assert ok.result.type == "succeeded" and errored.result.type == "errored"
    assert errored.result.error.error.type == "invalid_request_error"


def test_failed_batches(fake, gpt, claude):
    fake.batch_mode("fail")
    failed = gpt.batches.retrieve(submit_openai(gpt, ["A.", "B."]).id)
    assert failed.status == "failed" and failed.failed_at and failed.errors.data[0].code == "invalid_request"
    assert failed.output_file_id is None and failed.error_file_id is None
    assert (failed.request_counts.total, failed.request_counts.completed, failed.request_counts.failed) == (2, 0, 0)

    batch = submit_anthropic(claude, ["A.", "B."])
    assert claude.messages.batches.retrieve(batch.id).request_counts.errored == 2
    assert {line.result.error.error.type for line in claude.messages.batches.results(batch.id)} == {"invalid_request_error"}
    assert fake.requests(OPENAI) == fake.requests(ANTHROPIC) == []


def test_cancelled_batches(fake, gpt, claude):
    fake.batch_mode("hold")
    openai_batch = submit_openai(gpt, ["A."])
    assert gpt.batches.cancel(openai_batch.id).status == "cancelling"
    cancelled = gpt.batches.retrieve(openai_batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at and cancelled.output_file_id is None
    assert jsonl(gpt.files.content(cancelled.error_file_id).content)[0]["error"]["code"] == "batch_cancelled"

    anthropic_batch = submit_anthropic(claude, ["A."])
    canceling = claude.messages.batches.cancel(anthropic_batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at
    assert [line.result.type for line in claude.messages.batches.results(anthropic_batch.id)] == ["canceled"]
    assert claude.messages.batches.cancel(anthropic_batch.id).processing_status == "ended", "an ended batch stays ended"


def test_a_restarted_provider_keeps_its_batches_on_the_same_port(fake, gpt, claude):
    url = fake.openai_url
    openai_batch, anthropic_batch = submit_openai(gpt, ["A."]), submit_anthropic(claude, ["B."])
    fake.restart()
    assert fake.openai_url == url
    assert gpt.batches.retrieve(openai_batch.id).status == "completed"
    assert [line.result.type for line in claude.messages.batches.results(anthropic_batch.id)] == ["succeeded"]

    fake.stop()
    with pytest.raises(openai.APIConnectionError):
        gpt.batches.retrieve(openai_batch.id)
    fake.start_again()
    done = gpt.batches.retrieve(openai_batch.id)
    assert jsonl(gpt.files.content(done.output_file_id).content)[0]["custom_id"] == "item-0"


def test_listing_pages_newest_first_and_finds_a_batch_by_metadata(fake, gpt, claude):
    created = [submit_openai(gpt, ["A."], run=run).id for run in ("monday", "tuesday", "wednesday")]
    page = gpt.batches.list(limit=2)
    assert [b.id for b in page.data] == created[:0:-1] and page.has_more
    assert (page.first_id, page.last_id) == (created[2], created[1])
    assert [b.id for b in gpt.batches.list(limit=2) if (b.metadata or {}).get("run") == "monday"] == [created[0]]

    anthropic_ids = [submit_anthropic(claude, ["A."]).id for _ in range(3)]
    first_page = claude.messages.batches.list(limit=2)
    assert first_page.has_more and first_page.last_id == anthropic_ids[1]
    assert [b.id for b in claude.messages.batches.list(limit=2)] == anthropic_ids[::-1]


def test_anthropic_reports_cache_writes_then_reads(fake, claude):
    body = json.loads(json.dumps(message_params("I met Anna.")))
    body["system"] = [{"type": "text", "text": "x" * 8000, "cache_control": {"type": "ephemeral"}}]
    first, second = (claude.messages.create(**body).usage for _ in range(2))
    total = len(json.dumps(fake.requests(ANTHROPIC)[0]["body"])) // 4
    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens, first.input_tokens) == (2000, 0, total - 2000)
    assert (second.cache_creation_input_tokens, second.cache_read_input_tokens, second.input_tokens) == (0, 2000, total - 2000)

    uncached = claude.messages.create(**message_params("I met Anna.", system=[{"type": "text", "text": "x" * 8000}])).usage
    short = claude.messages.create(**message_params("I met Anna.", system=[
        {"type": "text", "text": "y" * 400, "cache_control": {"type": "ephemeral"}}])).usage
    assert [(u.cache_creation_input_tokens, u.cache_read_input_tokens) for u in (uncached, short)] == [(0, 0), (0, 0)]

    body["model"] = "claude-other"
    cached_batch = claude.messages.batches.create(requests=[{"custom_id": f"c{i}", "params": body} for i in range(2)])
    claude.messages.batches.retrieve(cached_batch.id)
    usages = [line.result.message.usage for line in claude.messages.batches.results(cached_batch.id)]
    assert [(u.cache_creation_input_tokens, u.cache_read_input_tokens) for u in usages] == [(2000, 0), (0, 2000)]


def test_openai_reports_cached_prompt_tokens_on_the_second_call(fake, gpt):
    body = chat_body("I met Anna.", system="s" * 6000)
    first, second = (gpt.chat.completions.create(**body).usage for _ in range(2))
    assert first.prompt_tokens_details.cached_tokens == 0
    assert second.prompt_tokens_details.cached_tokens == 1408, "1500 prefix tokens, in steps of 128"
    assert first.prompt_tokens == second.prompt_tokens == len(json.dumps(fake.requests(OPENAI)[0]["body"])) // 4
    short = gpt.chat.completions.create(**chat_body("I met Anna.")).usage
    assert gpt.chat.completions.create(**chat_body("I met Anna.")).usage.prompt_tokens_details.cached_tokens == 0
    assert short.prompt_tokens_details.cached_tokens == 0


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": f"{INSTRUCTIONS}\n{transcript('I met Anna.')}"}]},
    chat_body("I met Anna."),
    {"messages": [{"role": "user", "content": [{"type": "text", "text": transcript("I met Anna.")}]}]},
    {"system": [{"type": "text", "text": INSTRUCTIONS}], "messages": [{"role": "user", "content": transcript("I met Anna.")}]},
    {"system": INSTRUCTIONS, "messages": [{"role": "user", "content": transcript("I met Anna.")}]},
], ids=["instructions then transcript", "system then transcript", "content blocks", "system blocks", "system string"])
def test_the_transcript_is_found_in_every_prompt_layout(body):
    assert valid_note(_transcript_of(body))["events"] == [{"text": "I met Anna.", "segments": [0]}]


def test_an_unknown_batch_mode_is_refused(fake):
    with pytest.raises(ValueError):
        fake.batch_mode("explode")
