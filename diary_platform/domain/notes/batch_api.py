"""The providers' batch APIs, for notes that can wait: about half the price, answered within 24 hours.

OpenAI: the requests go up as a JSONL file, a batch is created over it (tagged with our record's id in its
metadata, so a submitter that died before recording the batch id can find it again), and the answers come
back as an output file and an error file. Anthropic: a message batch holds the requests itself and its
results stream back as JSONL. Each request is one chunk of one recording's transcript (`custom_id`
`<recording>-<chunk>`), built exactly as the synchronous call would build it, so the answers are checked
the same way. Calls use the provider's SDK client with its own retries and a short timeout.
"""

import io
import json
from dataclasses import dataclass

from diary_platform.domain.notes.providers import (
    Completion,
    Provider,
    ProviderFailure,
    anthropic_completion,
    classify_error,
    openai_completion,
)

BATCH_KINDS = ("openai", "anthropic")
METADATA_KEY = "diary_note_batch"
POLL_TIMEOUT_SECONDS = 10.0
_OPENAI_RUNNING = {"validating", "in_progress", "finalizing", "cancelling"}


@dataclass(frozen=True)
class BatchState:
    """Where a provider batch stands: `ended` once the provider will answer nothing more, and how it ended
    (`completed`, `expired`, `failed`, `cancelled`) or `in_progress`."""

    ended: bool
    outcome: str


def custom_id(recording_id: str, chunk: int) -> str:
    return f"{recording_id}-{chunk}"


def supports_batches(provider: Provider) -> bool:
    return provider.spec.kind in BATCH_KINDS


def _client(provider: Provider):
    return provider.client.with_options(timeout=POLL_TIMEOUT_SECONDS)


def _calling(action):
    """The SDKs' errors, after their retries, as ProviderFailure (the poller backs off on `unavailable`)."""
    try:
        return action()
    except ProviderFailure:
        raise
    except Exception as error:
        if not hasattr(error, "status_code") and type(error).__name__ not in {"APITimeoutError", "APIConnectionError"}:
            raise
        raise classify_error(error, 1) from error


def submit(provider: Provider, model: str, requests: list[tuple[str, list[dict]]], schema: dict, record_id: str) -> str:
    """Send `requests` ((custom_id, messages) each) as one batch; the provider's batch id."""
    client = _client(provider)
    if provider.spec.kind == "anthropic":
        batch = _calling(lambda: client.messages.batches.create(
            requests=[{"custom_id": cid, "params": provider.anthropic_body(model, messages, schema)} for cid, messages in requests]
        ))
        return batch.id
    lines = [
        json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": provider.openai_body(model, messages, schema)})
        for cid, messages in requests
    ]
    upload = _calling(lambda: client.files.create(
        file=(f"{record_id}.jsonl", io.BytesIO("\n".join(lines).encode()), "application/jsonl"), purpose="batch"
    ))
    batch = _calling(lambda: client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={METADATA_KEY: record_id}
    ))
    return batch.id


def find(provider: Provider, record_id: str) -> str | None:
    """The batch an earlier submitter created for `record_id` but did not live to record. OpenAI batches
    carry our metadata; Anthropic's carry none, so there the answer is always None."""
    if provider.spec.kind != "openai":
        return None
    page = _calling(lambda: _client(provider).batches.list(limit=100))
    return next((b.id for b in page.data if (b.metadata or {}).get(METADATA_KEY) == record_id), None)


def state(provider: Provider, remote_id: str) -> BatchState:
    client = _client(provider)
    if provider.spec.kind == "anthropic":
        batch = _calling(lambda: client.messages.batches.retrieve(remote_id))
        if batch.processing_status != "ended":
            return BatchState(False, "in_progress")
        counts = batch.request_counts
        return BatchState(True, "expired" if counts.expired and not counts.succeeded else "completed")
    batch = _calling(lambda: client.batches.retrieve(remote_id))
    if batch.status in _OPENAI_RUNNING:
        return BatchState(False, "in_progress")
    return BatchState(True, batch.status)


def cancel(provider: Provider, remote_id: str) -> None:
    client = _client(provider)
    if provider.spec.kind == "anthropic":
        _calling(lambda: client.messages.batches.cancel(remote_id))
    else:
        _calling(lambda: client.batches.cancel(remote_id))


def results(provider: Provider, remote_id: str) -> dict[str, Completion | ProviderFailure]:
    """Every answer the batch holds, by custom_id: a completion, or why that request has none. Results that
    cannot be read at all are a ProviderFailure (`invalid_output`), like a provider that cannot be reached."""
    try:
        return _results(provider, remote_id)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # a results file that is not what the API documents
        raise ProviderFailure("invalid_output", f"the batch's results cannot be read: {error}", 0) from error


def _results(provider: Provider, remote_id: str) -> dict[str, Completion | ProviderFailure]:
    client = _client(provider)
    if provider.spec.kind == "anthropic":
        answers: dict[str, Completion | ProviderFailure] = {}
        for line in _calling(lambda: list(client.messages.batches.results(remote_id))):
            result = line.result
            if result.type == "succeeded":
                answers[line.custom_id] = anthropic_completion(result.message, 0, batch=True)
            else:
                message = getattr(getattr(getattr(result, "error", None), "error", None), "message", result.type)
                answers[line.custom_id] = ProviderFailure(_ITEM_FAILURES.get(result.type, "unavailable"), f"batch item {result.type}: {message}", 0)
        return answers
    batch = _calling(lambda: client.batches.retrieve(remote_id))
    answers = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = _calling(lambda: client.files.content(file_id).text)
        for line in filter(str.strip, content.splitlines()):
            item = None
            try:
                item = json.loads(line)
                answers[item["custom_id"]] = _openai_item(item)
            except (ValueError, KeyError, TypeError) as error:  # one bad line costs its own answer, not the others'
                if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
                    answers[item["custom_id"]] = ProviderFailure("invalid_output", f"batch answer cannot be read: {error}", 0)
    return answers


_ITEM_FAILURES = {"errored": "rejected", "expired": "expired", "canceled": "expired"}


def _openai_item(item: dict) -> Completion | ProviderFailure:
    from openai.types.chat import ChatCompletion

    response = item.get("response") or {}
    error = item.get("error") or (response.get("body") or {}).get("error")
    if response.get("status_code") == 200 and not item.get("error"):
        return openai_completion(ChatCompletion.model_validate(response["body"]), 0, batch=True)
    code = (error or {}).get("code") or ""
    kind = "expired" if code == "batch_expired" else "rejected" if 400 <= (response.get("status_code") or 0) < 500 else "unavailable"
    return ProviderFailure(kind, f"batch item failed: {(error or {}).get('message', code or 'no answer')}", 0, response.get("status_code"))
