"""LLM calls as the OpenTelemetry GenAI semantic conventions describe them: a `chat {model}` span per provider call and
the `gen_ai.client.*` metrics, checked against what the fake OpenAI and Anthropic servers answered."""

import json
from datetime import datetime, timezone

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from diary_platform.domain import instruments
from diary_platform.domain.notes.note import NoteRequest
from diary_platform.domain.notes.providers import ProviderSpec
from diary_platform.domain.notes.genai import CAPTURE_MESSAGE_CONTENT
from diary_platform.domain.notes.router import NoteRouter, RouterConfig
from diary_platform.domain.shared_state import open_shared_state
from diary_platform_tests.fake_llm import ANTHROPIC, OPENAI, FakeLLM

GPT, CLAUDE, LLAMA = "gpt-4o-mini", "claude-haiku-4-5", "llama3.1:8b"
KEYS = {"OPENAI_API_KEY": "sk-test-key", "ANTHROPIC_API_KEY": "sk-ant-test-key"}
WHEN = datetime(2026, 11, 26, 18, 0, tzinfo=timezone.utc)
SEGMENTS = [{"start": 0.0, "end": 3.0, "text": "I met my sister Anna in Berlin."}]
PRIVATE = [{"start": 0.0, "end": 4.0, "text": "Mail anna@example.org about the trip."}]
CONTENT_ATTRIBUTES = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"}


@pytest.fixture(scope="module")
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake, monkeypatch):
    fake.log.clear()
    fake.scripts.clear()
    monkeypatch.delenv(CAPTURE_MESSAGE_CONTENT, raising=False)


def router(fake, tmp_path, *kinds: str, **overrides) -> NoteRouter:
    known = {
        "openai": ProviderSpec("openai", "openai", (GPT,), "OPENAI_API_KEY", fake.openai_url),
        "anthropic": ProviderSpec("anthropic", "anthropic", (CLAUDE,), "ANTHROPIC_API_KEY", fake.anthropic_url),
        "ollama": ProviderSpec("ollama", "openai_compatible", (LLAMA,), None, fake.openai_url),
    }
    config = RouterConfig(providers=tuple(known[kind] for kind in kinds), **{"call_timeout_seconds": 2.0, "max_retries": 1, **overrides})
    return NoteRouter(config, open_shared_state(tmp_path), environ=KEYS)


def write_note(notes: NoteRouter, segments=SEGMENTS):
    """The note written under a `write_note` span, as the notes step writes it; returns the note and that span's id."""
    with instruments.current().tracer.start_as_current_span("write_note") as parent:
        note = notes.write(NoteRequest("r" * 24, "alice", WHEN, " ".join(s["text"] for s in segments), segments))
    return note, parent.get_span_context().span_id


def chat_spans(telemetry) -> list:
    return [span for span in telemetry.spans.get_finished_spans() if span.name.startswith("chat ")]


def points(telemetry, name: str) -> list:
    data = telemetry.metrics.get_metrics_data()  # None before anything was recorded
    return [point for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics for metric in sm.metrics
            if metric.name == name for point in metric.data.data_points]


def sent_tokens(request: dict) -> int:
    """The fake's count of a request's input tokens (its JSON length over four)."""
    return len(json.dumps(request["body"])) // 4


def test_an_openai_call_is_a_chat_client_span_under_the_notes_span(fake, tmp_path, telemetry_readers):
    note, parent = write_note(router(fake, tmp_path, "openai"))
    [span] = chat_spans(telemetry_readers)
    assert span.name == f"chat {GPT}" and span.kind == SpanKind.CLIENT and span.parent.span_id == parent
    assert span.status.status_code == StatusCode.UNSET
    [sent] = fake.requests(OPENAI, GPT)
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.system": "openai",
        "gen_ai.request.model": GPT, "gen_ai.request.max_tokens": 1200, "gen_ai.request.temperature": 0.2,
        "gen_ai.response.model": GPT, "gen_ai.response.id": "chatcmpl-fake", "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": sent_tokens(sent), "gen_ai.usage.output_tokens": note.output_tokens,
        "server.address": "127.0.0.1", "server.port": int(fake.openai_url.split(":")[2].split("/")[0]),
        "diary.provider": "openai", "diary.delivery": "synchronous", "diary.cost_usd": pytest.approx(note.cost_usd, abs=1e-6),
        "diary.attempts": 1, "diary.outcome": "ok",
    }


def test_an_anthropic_call_names_its_stop_reason_and_prompt_cache_reads(fake, tmp_path, telemetry_readers, monkeypatch):
    monkeypatch.setattr(fake, "cache_min_tokens", 1)  # the instructions are cached by the first call, read by the second
    notes = router(fake, tmp_path, "anthropic")
    write_note(notes)
    second, parent = write_note(notes)
    span = chat_spans(telemetry_readers)[-1]
    assert span.name == f"chat {CLAUDE}" and span.kind == SpanKind.CLIENT and span.parent.span_id == parent
    attributes = dict(span.attributes)
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "anthropic"
    assert (attributes["gen_ai.response.model"], attributes["gen_ai.response.id"]) == (CLAUDE, "msg_fake")
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert attributes["gen_ai.request.max_tokens"] == 1200 and "gen_ai.request.temperature" not in attributes
    assert attributes["gen_ai.usage.input_tokens"] == sent_tokens(fake.requests(ANTHROPIC, CLAUDE)[-1]) == second.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == second.output_tokens
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == second.cached_input_tokens > 0
    assert "gen_ai.usage.cache_creation.input_tokens" not in attributes


def test_a_fallback_records_the_failed_call_as_an_error_and_both_durations(fake, tmp_path, telemetry_readers):
    fake.script(OPENAI, GPT, "server_error", "server_error")
    note, parent = write_note(router(fake, tmp_path, "openai", "anthropic"))
    assert note.fallback_path == [f"openai/{GPT}:unavailable", f"anthropic/{CLAUDE}:ok"]
    failed, answered = chat_spans(telemetry_readers)
    assert failed.name == f"chat {GPT}" and failed.parent.span_id == parent == answered.parent.span_id
    assert failed.status.status_code == StatusCode.ERROR
    assert (failed.attributes["error.type"], failed.attributes["diary.outcome"], failed.attributes["diary.attempts"]) == (
        "unavailable", "unavailable", 2)
    assert not [name for name in failed.attributes if name.startswith(("gen_ai.usage.", "gen_ai.response."))]
    assert answered.name == f"chat {CLAUDE}" and answered.status.status_code == StatusCode.UNSET
    assert "error.type" not in answered.attributes and answered.attributes["diary.outcome"] == "ok"

    durations = {dict(p.attributes)["gen_ai.request.model"]: p for p in points(telemetry_readers, "gen_ai.client.operation.duration")}
    assert set(durations) == {GPT, CLAUDE} and all(p.count == 1 and p.sum > 0 for p in durations.values())
    assert dict(durations[GPT].attributes)["error.type"] == "unavailable"
    assert "gen_ai.response.model" not in durations[GPT].attributes
    assert dict(durations[CLAUDE].attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": CLAUDE,
        "gen_ai.response.model": CLAUDE, "server.address": "127.0.0.1", "server.port": answered.attributes["server.port"],
    }
    assert durations[GPT].explicit_bounds == instruments.OPERATION_DURATION_BUCKETS

    tokens = {dict(p.attributes)["gen_ai.token.type"]: p for p in points(telemetry_readers, "gen_ai.client.token.usage")}
    assert set(tokens) == {"input", "output"}, "token usage only for the call that answered"
    assert note.input_tokens == sent_tokens(fake.requests(ANTHROPIC, CLAUDE)[0])
    assert (tokens["input"].count, tokens["input"].sum) == (1, note.input_tokens)
    assert (tokens["output"].count, tokens["output"].sum) == (1, note.output_tokens)
    assert all(dict(p.attributes)["gen_ai.request.model"] == CLAUDE for p in tokens.values())
    assert tokens["input"].explicit_bounds == instruments.TOKEN_USAGE_BUCKETS


def test_a_repair_is_a_call_of_its_own_and_token_usage_adds_up(fake, tmp_path, telemetry_readers):
    fake.script(OPENAI, GPT, "malformed")
    note, _ = write_note(router(fake, tmp_path, "openai"))
    assert note.fallback_path == [f"openai/{GPT}:ok"]
    assert [span.name for span in chat_spans(telemetry_readers)] == [f"chat {GPT}"] * 2
    tokens = {dict(p.attributes)["gen_ai.token.type"]: p for p in points(telemetry_readers, "gen_ai.client.token.usage")}
    assert note.input_tokens == sum(map(sent_tokens, fake.log))
    assert (tokens["input"].count, tokens["input"].sum) == (2, note.input_tokens)
    assert (tokens["output"].count, tokens["output"].sum) == (2, note.output_tokens)


def test_a_timed_out_call_says_timeout(fake, tmp_path, telemetry_readers, monkeypatch):
    monkeypatch.setattr(fake, "stall_seconds", 0.6)
    fake.script(OPENAI, GPT, "stall")
    note, _ = write_note(router(fake, tmp_path, "openai", call_timeout_seconds=0.2, max_retries=0))
    assert note.fallback_path[0] == f"openai/{GPT}:unavailable"
    [span] = chat_spans(telemetry_readers)
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "timeout"
    [duration] = points(telemetry_readers, "gen_ai.client.operation.duration")
    assert dict(duration.attributes)["error.type"] == "timeout"


def test_no_message_content_by_default(fake, tmp_path, telemetry_readers):
    write_note(router(fake, tmp_path, "openai"), PRIVATE)
    for span in telemetry_readers.spans.get_finished_spans():
        assert not CONTENT_ATTRIBUTES & set(span.attributes)
        recorded = json.dumps([dict(span.attributes)] + [dict(event.attributes or {}) for event in span.events])
        assert "anna" not in recorded.lower() and "trip" not in recorded


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_content_when_asked_for_is_what_the_cloud_provider_got_redacted(fake, tmp_path, telemetry_readers, monkeypatch, provider):
    monkeypatch.setenv(CAPTURE_MESSAGE_CONTENT, "true")
    write_note(router(fake, tmp_path, provider), PRIVATE)
    [span] = chat_spans(telemetry_readers)
    [sent] = fake.log
    recorded = json.loads(span.attributes["gen_ai.input.messages"])
    assert recorded == [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in sent["body"]["messages"]]
    assert "[email]" in span.attributes["gen_ai.input.messages"]
    assert "anna@example.org" not in json.dumps(dict(span.attributes))
    if provider == "anthropic":
        [instructions] = json.loads(span.attributes["gen_ai.system_instructions"])
        assert instructions == {"type": "text", "content": sent["body"]["system"][0]["text"]}
    [answer] = json.loads(span.attributes["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["finish_reason"] == span.attributes["gen_ai.response.finish_reasons"][0]
    assert json.loads(answer["parts"][0]["content"])["title"].startswith("Note:")


def test_a_local_openai_compatible_server_is_openai_and_gets_the_transcript_as_said(fake, tmp_path, telemetry_readers, monkeypatch):
    monkeypatch.setenv(CAPTURE_MESSAGE_CONTENT, "true")
    write_note(router(fake, tmp_path, "ollama"), PRIVATE)
    [span] = chat_spans(telemetry_readers)
    assert (span.attributes["gen_ai.provider.name"], span.attributes["diary.provider"]) == ("openai", "ollama")
    assert "anna@example.org" in span.attributes["gen_ai.input.messages"], "unredacted, as this server received it"


def test_a_batch_answer_is_a_chat_span_without_call_metrics(fake, tmp_path, telemetry_readers):
    notes = router(fake, tmp_path, "openai")
    request = NoteRequest("b" * 24, "alice", WHEN, SEGMENTS[0]["text"], SEGMENTS)
    record = notes.submit("batch-1", "openai", GPT, [request], WHEN)
    assert notes.poll(record).ended
    with instruments.current().tracer.start_as_current_span("collect") as parent:
        note = notes.collect(record, [request])[request.recording_id]
    assert note.fallback_path == [f"openai/{GPT}:batch_ok"]
    [span] = chat_spans(telemetry_readers)
    assert span.kind == SpanKind.INTERNAL and span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes["diary.delivery"] == "batch" and span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["gen_ai.usage.input_tokens"] == note.input_tokens
    assert span.attributes["diary.cost_usd"] == pytest.approx(note.cost_usd, abs=1e-6)
    assert points(telemetry_readers, "gen_ai.client.operation.duration") == []
