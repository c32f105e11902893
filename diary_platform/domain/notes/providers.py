"""Language-model providers behind one call: the official OpenAI and Anthropic SDKs.

Each call has exactly one retry layer, the SDK's own (`max_retries`, honouring Retry-After), and an
explicit timeout. The SDKs retry 408, 409, 429 and 5xx (Anthropic's 529 too); a quota or spend-cap
429 must not be retried, so a response hook marks it `x-should-retry: false`, a header both SDKs obey.
"""

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

import httpx2
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from diary_platform.domain.notes.spend import TokenUsage

QUOTA_MARKERS = ("insufficient_quota", "spend limit", "spending limit", "credit balance", "quota")


ProviderKind = Literal["openai", "anthropic", "openai_compatible"]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ProviderSpec:
    name: str
    kind: ProviderKind
    models: tuple[str, ...] = Field(min_length=1)
    api_key_env: str | None = None
    base_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+")
    context_tokens: int = Field(default=100_000, gt=0)

    def is_local(self, local_hosts: Iterable[str] = ()) -> bool:
        """A server of the user's own, that may see unredacted transcripts under `local_only` and costs nothing:
        only an OpenAI-compatible server on a loopback address, or on a host the configuration lists in
        `local_hosts`. Anything else, OpenAI and Anthropic above all, is a cloud provider."""
        if self.kind != "openai_compatible" or not self.base_url:
            return False
        host = (urlparse(self.base_url).hostname or "").lower()
        if host == "localhost" or host in {h.lower() for h in local_hosts}:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class Completion:
    """One answer. `usage.input_tokens` counts every prompt token, those read from or written to the prompt cache included.
    `response_model`, `response_id` and `finish_reason` are as the answer names them, for its telemetry."""

    text: str
    usage: TokenUsage
    truncated: bool
    http_attempts: int
    response_model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None


class ProviderFailure(Exception):
    """A call that failed after the SDK's retries. `kind`: unavailable, quota, rejected or auth."""

    def __init__(self, kind: str, message: str, http_attempts: int = 1, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.http_attempts = http_attempts
        self.status = status


def is_quota_error(status: int, body: bytes) -> bool:
    text = body.decode("utf-8", "replace").lower()
    return status == 429 and any(marker in text for marker in QUOTA_MARKERS)


def _never_retry_quota(response: httpx2.Response) -> None:
    if response.status_code == 429:
        response.read()
        if is_quota_error(429, response.content):
            response.headers["x-should-retry"] = "false"


def classify_error(error: Exception, attempts: int) -> ProviderFailure:
    status = getattr(error, "status_code", None)
    body = getattr(getattr(error, "response", None), "content", b"") or b""
    if status is None:
        return ProviderFailure("unavailable", f"{type(error).__name__}: {error}", attempts)
    if is_quota_error(status, body):
        return ProviderFailure("quota", f"quota or spend limit reached ({status})", attempts, status)
    if status in (401, 403):
        return ProviderFailure("auth", f"refused credentials ({status})", attempts, status)
    if status in (400, 404, 422):
        return ProviderFailure("rejected", f"request rejected ({status}): {error}", attempts, status)
    return ProviderFailure("unavailable", f"failed after retries ({status})", attempts, status)


class Provider:
    def __init__(self, spec: ProviderSpec, api_key: str | None, timeout: float, max_retries: int, max_output_tokens: int):
        self.spec = spec
        self.max_retries = max_retries
        self.max_output_tokens = max_output_tokens
        self._http_attempts = 0
        self.client = self._client(api_key, timeout, max_retries)

    def _count_attempt(self, request: httpx2.Request) -> None:
        self._http_attempts += 1

    def _http_client(self, timeout: float) -> httpx2.Client:
        """Counts every HTTP attempt (retries included) and keeps quota errors from being retried."""
        hooks = {"request": [self._count_attempt], "response": [_never_retry_quota]}
        return httpx2.Client(timeout=timeout, event_hooks=hooks)

    def _client(self, api_key, timeout, max_retries):
        if self.spec.kind == "anthropic":
            from anthropic import Anthropic

            return Anthropic(
                api_key=api_key, base_url=self.spec.base_url, timeout=timeout, max_retries=max_retries,
                http_client=self._http_client(timeout),
            )
        from openai import OpenAI

        return OpenAI(
            api_key=api_key or "local", base_url=self.spec.base_url, timeout=timeout, max_retries=max_retries,
            http_client=self._http_client(timeout),
        )

    def complete(self, model: str, messages: list[dict], schema: dict, timeout: float) -> Completion:
        """`timeout` bounds each HTTP attempt (the router passes what is left of the note's deadline)."""
        self._http_attempts = 0
        client = self.client.with_options(timeout=timeout)
        try:
            if self.spec.kind == "anthropic":
                return self._anthropic(client, model, messages, schema)
            return self._openai(client, model, messages, schema)
        except ProviderFailure:
            raise
        except Exception as error:  # the SDKs' errors, after their own retries
            if not hasattr(error, "status_code") and not _is_transport_error(error):
                raise
            raise classify_error(error, self._http_attempts) from error

    def openai_body(self, model: str, messages: list[dict], schema: dict) -> dict:
        """A chat completion request; OpenAI caches a long enough stable prefix (the system message) by itself."""
        limit = {"max_completion_tokens" if self.spec.kind == "openai" else "max_tokens": self.max_output_tokens}
        return {
            "model": model,
            "messages": messages,
            "response_format": {"type": "json_schema", "json_schema": {"name": "diary_note", "schema": schema}},
            "temperature": 0.2,
            **limit,
        }

    def anthropic_body(self, model: str, messages: list[dict], schema: dict) -> dict:
        """A messages request whose system prompt (instructions, template, schema) is marked for the prompt cache."""
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        return {
            "model": model,
            "max_tokens": self.max_output_tokens,
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": [m for m in messages if m["role"] != "system"],
            "tools": [{"name": "write_note", "description": "Record the structured note.", "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": "write_note"},
        }

    def _openai(self, client, model: str, messages: list[dict], schema: dict) -> Completion:
        raw = client.chat.completions.with_raw_response.create(**self.openai_body(model, messages, schema))
        return openai_completion(raw.parse(), self._http_attempts)

    def _anthropic(self, client, model: str, messages: list[dict], schema: dict) -> Completion:
        raw = client.messages.with_raw_response.create(**self.anthropic_body(model, messages, schema))
        return anthropic_completion(raw.parse(), self._http_attempts)


def openai_completion(completion, http_attempts: int, batch: bool = False) -> Completion:
    """A chat completion (the SDK's object) as a Completion; `prompt_tokens` already includes the cached ones."""
    choice = completion.choices[0]
    usage = completion.usage
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    return Completion(
        text=choice.message.content or "",
        usage=TokenUsage(
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            cached_input_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
            batch=batch,
        ),
        truncated=choice.finish_reason == "length",
        http_attempts=http_attempts,
        response_model=completion.model,
        response_id=completion.id,
        finish_reason=choice.finish_reason,
    )


def anthropic_completion(message, http_attempts: int, batch: bool = False) -> Completion:
    """A message (the SDK's object) as a Completion; Anthropic's `input_tokens` leaves out cache reads and writes."""
    tool_inputs = [block.input for block in message.content if block.type == "tool_use"]
    texts = [block.text for block in message.content if block.type == "text"]
    usage = message.usage
    cache_read = getattr(usage, "cache_read_input_tokens", 0) or 0
    cache_write = getattr(usage, "cache_creation_input_tokens", 0) or 0
    return Completion(
        text=json.dumps(tool_inputs[0]) if tool_inputs else "".join(texts),
        usage=TokenUsage(
            input_tokens=usage.input_tokens + cache_read + cache_write,
            output_tokens=usage.output_tokens,
            cached_input_tokens=cache_read,
            cache_write_tokens=cache_write,
            batch=batch,
        ),
        truncated=message.stop_reason == "max_tokens",
        http_attempts=http_attempts,
        response_model=message.model,
        response_id=message.id,
        finish_reason=message.stop_reason,
    )


def _is_transport_error(error: Exception) -> bool:
    return type(error).__name__ in {"APITimeoutError", "APIConnectionError"}
