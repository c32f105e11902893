"""LLM calls as the OpenTelemetry GenAI semantic conventions record them: `chat {model}` spans with `gen_ai.*`
attributes and the platform's `diary.*` ones, and the values of the GenAI client metrics. The router makes the
spans (router.py); this module says what goes on them."""

import json
import os

from diary_platform.domain.notes.providers import Completion, ProviderFailure

# LLM calls are recorded as the OpenTelemetry GenAI semantic conventions say (spans `chat {model}`, `gen_ai.*`
# attributes), plus the platform's own `diary.*` ones. Prompts and answers only with this variable set to `true`.
CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def captures_message_content() -> bool:
    """Whether spans carry the messages (the user's diary, as sent: redacted for cloud providers); off by default, as
    in the OpenTelemetry GenAI instrumentations. Read at each call, not at import."""
    return os.environ.get(CAPTURE_MESSAGE_CONTENT, "").strip().lower() == "true"


def genai_attributes(route, model: str) -> dict:
    """What a call's span and metrics share. OpenAI-compatible servers are `openai` (the API they speak, the spec's
    value for them); `server.address` tells them apart."""
    url = route.provider.client.base_url
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic" if route.spec.kind == "anthropic" else "openai",
        "gen_ai.request.model": model,
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
    }


def span_attributes(route, genai: dict, delivery: str) -> dict:
    """`gen_ai.system` is the older name of `gen_ai.provider.name`, for backends that still read it."""
    return {**genai, "gen_ai.system": genai["gen_ai.provider.name"], "diary.provider": route.spec.name, "diary.delivery": delivery}


def request_attributes(body: dict) -> dict:
    return present({
        "gen_ai.request.max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
        "gen_ai.request.temperature": body.get("temperature"),
    })


def answer_attributes(completion: Completion, cost_usd: float) -> dict:
    """`diary.outcome` is `ok` for a complete answer: whether it makes a valid note is checked after the call (the
    note's fallback path says `invalid_output` when not)."""
    usage = completion.usage
    return present({
        "gen_ai.response.model": completion.response_model,
        "gen_ai.response.id": completion.response_id,
        "gen_ai.response.finish_reasons": [completion.finish_reason] if completion.finish_reason else None,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cached_input_tokens or None,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens or None,
        "diary.cost_usd": cost_usd,
        "diary.attempts": completion.http_attempts,
        "diary.outcome": "truncated" if completion.truncated else "ok",
    })


def error_type(error: Exception) -> str:
    """The failure's kind, a timeout told apart from other unavailability; an unexpected error's class."""
    if not isinstance(error, ProviderFailure):
        return f"{type(error).__module__}.{type(error).__qualname__}"
    return "timeout" if type(error.__cause__).__name__ == "APITimeoutError" else error.kind


def sent_content(body: dict) -> dict:
    """The messages as the provider got them, in the spec's JSON shapes; Anthropic takes the instructions apart."""
    content = {"gen_ai.input.messages": _json([{"role": m["role"], "parts": [_text_part(m["content"])]} for m in body["messages"]])}
    if "system" in body:
        content["gen_ai.system_instructions"] = _json([_text_part(block["text"]) for block in body["system"]])
    return content


def received_content(completion: Completion) -> dict:
    message = {"role": "assistant", "parts": [_text_part(completion.text)], "finish_reason": completion.finish_reason}
    return {"gen_ai.output.messages": _json([message])}


def _text_part(text: str) -> dict:
    return {"type": "text", "content": text}


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def present(attributes: dict) -> dict:
    """Attributes without the values an answer did not give (OpenTelemetry drops None with a warning)."""
    return {name: value for name, value in attributes.items() if value is not None}
