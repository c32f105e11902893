"""A local server that speaks the OpenAI and Anthropic wire protocols, with scripted faults.

It answers OpenAI's /v1/chat/completions and Anthropic's /v1/messages, and the two batch APIs (OpenAI files +
batches, Anthropic message batches) with the same note logic. The real SDK clients are pointed at it with `base_url`.
Each (API, model) has a queue of behaviours, consumed by synchronous calls and batch items alike; when the queue is
empty the answer is a valid note. Every request, batch item and batch-API call is logged for assertions. Stored files
and batches outlive `restart()`, as a provider's do.
"""

import email
import itertools
import json
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

OPENAI = "openai"
ANTHROPIC = "anthropic"
OPENAI_BATCHES = "openai_batches"
ANTHROPIC_BATCHES = "anthropic_batches"
BATCH_MODES = ("complete", "expire", "fail", "hold")
DAY_SECONDS = 24 * 3600

# behaviour: (HTTP status, OpenAI code, Anthropic error type, message, extra headers)
_ERRORS = {
    "rate_limit": (429, "rate_limit_exceeded", "rate_limit_error", "Rate limit reached. Please retry.", {"retry-after": "0.01"}),
    "server_error": (500, "server_error", "api_error", "The server had an error.", {}),
    "overloaded": (529, "overloaded", "overloaded_error", "Overloaded", {}),
    "quota": (429, "insufficient_quota", "rate_limit_error",
              "You exceeded your current quota (insufficient_quota); your spend limit is reached.", {}),
    "auth": (401, "invalid_api_key", "authentication_error", "Invalid API key.", {}),
    "not_found": (404, "model_not_found", "not_found_error", "The model {model} does not exist.", {}),
    "bad_request": (400, "invalid_request_error", "invalid_request_error", "Unsupported parameter.", {}),
    "unprocessable": (422, "unprocessable_entity", "invalid_request_error", "Unprocessable request.", {}),
}
_UNANSWERED_OPENAI_ERRORS = {
    "expired": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."},
    "canceled": {"code": "batch_cancelled", "message": "This request was not executed because the batch was cancelled."},
}
_FAILED_BATCH_ERRORS = {
    "object": "list", "data": [{"code": "invalid_request", "line": None, "param": None, "message": "The batch failed validation."}],
}


def valid_note(transcript_text: str, extra: str = "") -> dict:
    lines = re.findall(r"^\[(\d+)\] \S+ (.*)$", transcript_text, re.MULTILINE)
    first = lines[0][1] if lines else "Nothing said"
    return {
        "title": f"Note: {first[:60]}{extra}",
        "summary": f"The speaker said: {first}{extra}",
        "events": [{"text": text, "segments": [int(index)]} for index, text in lines],
        "people": [],
        "places": [],
        "todos": [],
        "mood": {"label": "neutral", "segments": [0] if lines else []},
    }


def _text_of(content) -> str:
    """The text of a message content or Anthropic `system`: a string, or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return ""


def _transcript_of(body: dict) -> str:
    """The transcript, wherever the prompt puts it: after instructions in a user message, or a message of its own."""
    texts = [_text_of(body.get("system"))] + [_text_of(m.get("content")) for m in body.get("messages", [])]
    text = next((t for t in reversed(texts) if "<transcript>\n" in t), "")
    return text.partition("<transcript>\n")[2]


def _error_body(api: str, code: str, anthropic_type: str, message: str) -> dict:
    if api == OPENAI:
        return {"error": {"message": message, "type": code, "param": None, "code": code}}
    return {"type": "error", "error": {"type": anthropic_type, "message": message}}


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def _seconds(timestamp: float | None) -> int | None:
    return None if timestamp is None else int(timestamp)


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@dataclass
class _ItemResult:
    """How one batch item ended: `kind` is Anthropic's result type; `payload` the body a sync call would have got."""

    custom_id: str
    kind: str
    status: int | None = None
    payload: dict | None = None
    request_id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex}")


@dataclass
class _Batch:
    """A submitted batch, how its scenario ends it (fixed when it is created), and its items' results once ended."""

    id: str
    api: str
    items: list[tuple[str, dict]]
    mode: str
    polls_to_finish: int
    expire_answered: int
    input_file_id: str | None = None
    endpoint: str | None = None
    completion_window: str | None = None
    metadata: dict | None = None
    created_at: float = field(default_factory=time.time)
    retrieves: int = 0
    cancel_requested_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None
    results: list[_ItemResult] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None


class _Server(ThreadingHTTPServer):
    """Rebinds a just-closed port at once, so that a restarted fake keeps the URLs the clients hold."""

    allow_reuse_address = True
    daemon_threads = True


class FakeLLM:
    def __init__(self):
        self.log: list[dict] = []
        self.scripts: dict[tuple[str, str], deque] = defaultdict(deque)
        self.stall_seconds = 3.0
        self.batch_polls_to_finish = 1
        self.batch_expire_answered = 0
        self.cache_min_tokens = 1024
        self._batch_mode = "complete"
        self._batches: dict[str, _Batch] = {}
        self._files: dict[str, dict] = {}
        self._cached_prefixes: set[tuple[str, str, str]] = set()
        self._lock = threading.RLock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._port = self._server.server_port
        self._thread: threading.Thread | None = None
        self._route_table = self._routes()

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def script(self, api: str, model: str, *behaviours: str) -> None:
        self.scripts[(api, model)].extend(behaviours)

    def requests(self, api: str | None = None, model: str | None = None) -> list[dict]:
        return [r for r in self.log if (api is None or r["api"] == api) and (model is None or r.get("model") == model)]

    def batch_mode(self, mode: str) -> None:
        """How batches created from now on end: complete, expire, fail, or hold until `finish_batches()`."""
        if mode not in BATCH_MODES:
            raise ValueError(f"batch mode {mode!r} is not one of {BATCH_MODES}")
        self._batch_mode = mode

    def finish_batches(self) -> None:
        """Ends every open batch now, as its scenario says; held batches complete."""
        with self._lock:
            for batch in self._batches.values():
                if batch.ended_at is None:
                    self._end(batch)

    def batches(self, api: str) -> list[dict]:
        """The batches created through `api`, oldest first, with their custom_ids and the status a client would see."""
        render = self._openai_batch if api == OPENAI else self._anthropic_batch
        with self._lock:
            return [
                {"id": b.id, "custom_ids": [custom_id for custom_id, _ in b.items], "metadata": b.metadata,
                 "status": render(b)["status" if api == OPENAI else "processing_status"]}
                for b in self._batches.values() if b.api == api
            ]

    def stop(self) -> None:
        """Closes the port, so that calls are refused as from an unreachable provider; files and batches are kept."""
        if self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._thread = None

    def start_again(self) -> None:
        """Serves again on the same port after `stop()`."""
        if self._thread is not None:
            return
        self._server = _Server(("127.0.0.1", self._port), self._handler())
        self._start()

    def restart(self) -> None:
        """A provider restart between submit and poll: a new server on the same port, with the same state."""
        self.stop()
        self.start_again()

    def __enter__(self) -> "FakeLLM":
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        """Polls for shutdown often, so that stopping and restarting take milliseconds rather than half a second."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake._route(self, "GET")

            def do_POST(self):
                fake._route(self, "POST")

        return Handler

    def _routes(self):
        return (
            ("POST", r"/v1/chat/completions", lambda h: self._sync(h, OPENAI)),
            ("POST", r"/v1/messages", lambda h: self._sync(h, ANTHROPIC)),
            ("POST", r"/v1/files", self._upload_file),
            ("GET", r"/v1/files/([^/]+)/content", self._download_file),
            ("POST", r"/v1/batches", self._create_openai_batch),
            ("GET", r"/v1/batches", lambda h: self._list_batches(h, OPENAI)),
            ("GET", r"/v1/batches/([^/]+)", lambda h, batch_id: self._retrieve_batch(h, OPENAI, batch_id)),
            ("POST", r"/v1/batches/([^/]+)/cancel", lambda h, batch_id: self._cancel_batch(h, OPENAI, batch_id)),
            ("POST", r"/v1/messages/batches", self._create_anthropic_batch),
            ("GET", r"/v1/messages/batches", lambda h: self._list_batches(h, ANTHROPIC)),
            ("GET", r"/v1/messages/batches/([^/]+)", lambda h, batch_id: self._retrieve_batch(h, ANTHROPIC, batch_id)),
            ("POST", r"/v1/messages/batches/([^/]+)/cancel", lambda h, batch_id: self._cancel_batch(h, ANTHROPIC, batch_id)),
            ("GET", r"/v1/messages/batches/([^/]+)/results", self._anthropic_results),
        )

    def _route(self, handler, method: str) -> None:
        path = urlsplit(handler.path).path
        for route_method, pattern, action in self._route_table:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                return action(handler, *match.groups())
        _send(handler, 404, {"error": {"message": f"No route {method} {path}", "type": "not_found", "param": None, "code": None}})

    def _next_behaviour(self, api: str, model: str) -> str:
        try:
            return self.scripts[(api, model)].popleft()
        except IndexError:
            return "ok"

    def _sync(self, handler, api: str) -> None:
        body = json.loads(_read_body(handler))
        model = body.get("model", "")
        behaviour = self._next_behaviour(api, model)
        self.log.append({"api": api, "model": model, "behaviour": behaviour, "body": body, "time": time.time()})
        if behaviour == "stall":
            time.sleep(self.stall_seconds)
        _send(handler, *self._answer(api, model, behaviour, body))

    def _answer(self, api: str, model: str, behaviour: str, body: dict) -> tuple[int, dict, dict]:
        """(status, payload, headers) of one call, shared by sync calls and batch items; a stall is the caller's."""
        if behaviour in _ERRORS:
            status, code, anthropic_type, message, headers = _ERRORS[behaviour]
            return status, _error_body(api, code, anthropic_type, message.format(model=model)), headers
        note = valid_note(_transcript_of(body))
        if behaviour == "schema_break":
            note = {"title": "Missing everything else"}
        if behaviour == "bad_citation":
            note["events"].append({"text": "Something nobody said", "segments": [len(note["events"]) + 7]})
        if behaviour == "unsupported":  # a real segment cited for a fact it does not say
            note["events"].append({"text": "Went skydiving over the Alps with a circus troupe", "segments": [0]})
        if behaviour == "with_url":
            note["summary"] += " See https://evil.example.com/x and ![img](http://evil.example.com/i.png)"
        if behaviour == "leak_prompt":
            note["summary"] = "My instructions: You turn transcripts of a person's voice recordings into structured notes."
        content = json.dumps(note)
        if behaviour == "malformed":
            content = content[: len(content) // 2] + " <<not json"
        truncated = behaviour == "truncated"
        usage_in, usage_out = len(json.dumps(body)) // 4, len(content) // 4
        if api == OPENAI:
            return 200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{
                    "index": 0, "logprobs": None, "finish_reason": "length" if truncated else "stop",
                    "message": {"role": "assistant", "content": content[:40] if truncated else content, "refusal": None},
                }],
                "usage": {
                    "prompt_tokens": usage_in, "completion_tokens": usage_out, "total_tokens": usage_in + usage_out,
                    "prompt_tokens_details": {"cached_tokens": self._openai_cached_tokens(model, body)},
                },
            }, {}
        block = (
            {"type": "text", "text": content[:40]} if truncated or behaviour == "malformed"
            else {"type": "tool_use", "id": "toolu_fake", "name": "write_note", "input": json.loads(content)}
        )
        written, read = self._anthropic_cache_tokens(model, body)
        return 200, {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [block],
            "stop_reason": "max_tokens" if truncated else "tool_use", "stop_sequence": None,
            "usage": {
                "input_tokens": usage_in - written - read, "output_tokens": usage_out,
                "cache_creation_input_tokens": written, "cache_read_input_tokens": read,
            },
        }, {}

    def _cache_hit(self, api: str, model: str, prefix: str) -> bool:
        """Whether this prefix was cached by an earlier call; caches it for later ones."""
        key = (api, model, prefix)
        with self._lock:
            seen = key in self._cached_prefixes
            self._cached_prefixes.add(key)
        return seen

    def _anthropic_cache_tokens(self, model: str, body: dict) -> tuple[int, int]:
        """(written, read) cache tokens: Anthropic caches the system blocks up to the last one marked `cache_control`."""
        system = body.get("system")
        blocks = system if isinstance(system, list) else []
        marked = [index for index, block in enumerate(blocks) if block.get("cache_control")]
        if not marked:
            return 0, 0
        prefix = _text_of(blocks[: marked[-1] + 1])
        tokens = len(prefix) // 4
        if tokens < self.cache_min_tokens:
            return 0, 0
        return (0, tokens) if self._cache_hit(ANTHROPIC, model, prefix) else (tokens, 0)

    def _openai_cached_tokens(self, model: str, body: dict) -> int:
        """OpenAI caches the leading system messages by itself, and reports hits in steps of 128 tokens."""
        leading = itertools.takewhile(lambda m: m.get("role") in ("system", "developer"), body.get("messages", []))
        prefix = "".join(_text_of(m.get("content")) for m in leading)
        tokens = len(prefix) // 4
        if tokens < self.cache_min_tokens or not self._cache_hit(OPENAI, model, prefix):
            return 0
        return tokens // 128 * 128

    def _log_action(self, api: str, action: str, **ids) -> None:
        self.log.append({"api": api, "model": None, "action": action, **ids, "time": time.time()})

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict:
        file = {
            "id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(content), "created_at": int(time.time()),
            "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None, "status_details": None,
        }
        with self._lock:
            self._files[file["id"]] = {"object": file, "content": content}
        return file

    def _upload_file(self, handler) -> None:
        fields = _multipart_fields(handler.headers.get_param("boundary"), _read_body(handler))
        filename, content = fields["file"]
        file = self._store_file(content, filename or "upload.jsonl", fields["purpose"][1].decode())
        self._log_action(OPENAI_BATCHES, "upload", file=file["id"])
        _send(handler, 200, file)

    def _download_file(self, handler, file_id: str) -> None:
        self._log_action(OPENAI_BATCHES, "download", file=file_id)
        stored = self._files.get(file_id)
        if stored is None:
            return _send(handler, 404, _error_body(OPENAI, "not_found", "", f"No such File object: {file_id}"))
        _send_bytes(handler, 200, stored["content"], "application/octet-stream")

    def _new_batch(self, api: str, prefix: str, items: list[tuple[str, dict]], **fields) -> _Batch:
        batch = _Batch(
            id=f"{prefix}{uuid.uuid4().hex}", api=api, items=items, mode=self._batch_mode,
            polls_to_finish=self.batch_polls_to_finish, expire_answered=self.batch_expire_answered, **fields,
        )
        with self._lock:
            self._batches[batch.id] = batch
        return batch

    def _create_openai_batch(self, handler) -> None:
        request = json.loads(_read_body(handler))
        stored = self._files.get(request["input_file_id"])
        if stored is None:
            self._log_action(OPENAI_BATCHES, "create", batch=None)
            return _send(handler, 404, _error_body(OPENAI, "not_found", "", f"No such File object: {request['input_file_id']}"))
        lines = [json.loads(line) for line in stored["content"].splitlines() if line.strip()]
        batch = self._new_batch(
            OPENAI, "batch_", [(line["custom_id"], line["body"]) for line in lines],
            input_file_id=request["input_file_id"], endpoint=request["endpoint"],
            completion_window=request["completion_window"], metadata=request.get("metadata"),
        )
        self._log_action(OPENAI_BATCHES, "create", batch=batch.id)
        _send(handler, 200, self._openai_batch(batch))

    def _create_anthropic_batch(self, handler) -> None:
        request = json.loads(_read_body(handler))
        batch = self._new_batch(ANTHROPIC, "msgbatch_", [(r["custom_id"], r["params"]) for r in request["requests"]])
        self._log_action(ANTHROPIC_BATCHES, "create", batch=batch.id)
        _send(handler, 200, self._anthropic_batch(batch))

    def _found_batch(self, handler, api: str, batch_id: str) -> _Batch | None:
        """The batch, or None after answering 404 as the provider does."""
        batch = self._batches.get(batch_id)
        if batch is None or batch.api != api:
            _send(handler, 404, _error_body(api, "not_found", "not_found_error", f"No batch {batch_id}"))
            return None
        return batch

    def _render(self, batch: _Batch) -> dict:
        return self._openai_batch(batch) if batch.api == OPENAI else self._anthropic_batch(batch)

    def _retrieve_batch(self, handler, api: str, batch_id: str) -> None:
        self._log_action(f"{api}_batches", "retrieve", batch=batch_id)
        batch = self._found_batch(handler, api, batch_id)
        if batch is None:
            return
        with self._lock:
            batch.retrieves += 1
            ready = batch.mode != "hold" and batch.retrieves >= batch.polls_to_finish
            if batch.ended_at is None and (ready or batch.cancel_requested_at is not None):
                self._end(batch)
            rendered = self._render(batch)
        _send(handler, 200, rendered)

    def _cancel_batch(self, handler, api: str, batch_id: str) -> None:
        """Cancelling shows as cancelling; the next retrieve sees it cancelled. An ended batch is returned unchanged."""
        self._log_action(f"{api}_batches", "cancel", batch=batch_id)
        batch = self._found_batch(handler, api, batch_id)
        if batch is None:
            return
        with self._lock:
            if batch.ended_at is None and batch.cancel_requested_at is None:
                batch.cancel_requested_at = time.time()
            rendered = self._render(batch)
        _send(handler, 200, rendered)

    def _list_batches(self, handler, api: str) -> None:
        """Newest first, paged by `after` (OpenAI) or `after_id` (Anthropic) and `limit`, as both providers do."""
        self._log_action(f"{api}_batches", "list")
        query = {name: values[0] for name, values in parse_qs(urlsplit(handler.path).query).items()}
        after = query.get("after" if api == OPENAI else "after_id")
        limit = int(query.get("limit", 20))
        with self._lock:
            newest_first = [b for b in reversed(self._batches.values()) if b.api == api]
            start = next((i + 1 for i, b in enumerate(newest_first) if b.id == after), 0)
            page = [self._render(b) for b in newest_first[start:start + limit]]
            has_more = start + limit < len(newest_first)
        ids = {"first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}
        _send(handler, 200, {**({"object": "list"} if api == OPENAI else {}), "data": page, "has_more": has_more, **ids})

    def _anthropic_results(self, handler, batch_id: str) -> None:
        self._log_action(ANTHROPIC_BATCHES, "results", batch=batch_id)
        batch = self._found_batch(handler, ANTHROPIC, batch_id)
        if batch is None:
            return
        if batch.ended_at is None:
            return _send(handler, 404, _error_body(ANTHROPIC, "", "not_found_error", f"Batch {batch_id} has not ended"))
        _send_bytes(handler, 200, _jsonl([_anthropic_result_line(r) for r in batch.results]), "application/binary")

    def _end(self, batch: _Batch) -> None:
        """Answers the items its scenario lets through, like sync calls (script queue, log); the rest go unanswered.

        OpenAI fails a batch as a whole, before any item runs; Anthropic has no such state, so there every item errors.
        """
        items = len(batch.items)
        if batch.cancel_requested_at is not None:
            batch.outcome, answered, unanswered = "cancelled", 0, "canceled"
        else:
            batch.outcome, answered, unanswered = {
                "complete": ("completed", items, None),
                "hold": ("completed", items, None),
                "expire": ("expired", batch.expire_answered, "expired"),
                "fail": ("failed", 0, "errored"),
            }[batch.mode]
        if batch.outcome == "failed" and batch.api == OPENAI:
            batch.ended_at = time.time()
            return
        for index, (custom_id, body) in enumerate(batch.items):
            if index < answered:
                model = body.get("model", "")
                behaviour = self._next_behaviour(batch.api, model)
                self.log.append({"api": batch.api, "model": model, "behaviour": behaviour, "body": body,
                                 "time": time.time(), "batch": batch.id, "custom_id": custom_id})
                status, payload, _ = self._answer(batch.api, model, behaviour, body)
                batch.results.append(_ItemResult(custom_id, "succeeded" if status == 200 else "errored", status, payload))
            elif unanswered == "errored":
                payload = _error_body(ANTHROPIC, "", "invalid_request_error", "The request failed validation.")
                batch.results.append(_ItemResult(custom_id, "errored", 400, payload))
            else:
                batch.results.append(_ItemResult(custom_id, unanswered))
        batch.ended_at = time.time()
        if batch.api == OPENAI:
            self._write_openai_result_files(batch)

    def _write_openai_result_files(self, batch: _Batch) -> None:
        """Answered items go to the output file; failed and unanswered ones to the error file, as OpenAI splits them."""
        succeeded = [_openai_result_line(r) for r in batch.results if r.kind == "succeeded"]
        failed = [_openai_result_line(r) for r in batch.results if r.kind != "succeeded"]
        if succeeded:
            batch.output_file_id = self._store_file(_jsonl(succeeded), f"{batch.id}_output.jsonl", "batch_output")["id"]
        if failed:
            batch.error_file_id = self._store_file(_jsonl(failed), f"{batch.id}_error.jsonl", "batch_output")["id"]

    def _openai_batch(self, batch: _Batch) -> dict:
        ended = {"completed": "completed_at", "expired": "expired_at", "failed": "failed_at", "cancelled": "cancelled_at"}
        if batch.outcome:
            status = batch.outcome
        elif batch.cancel_requested_at is not None:
            status = "cancelling"
        else:
            status = "in_progress" if batch.retrieves else "validating"
        return {
            "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window, "status": status, "created_at": _seconds(batch.created_at),
            "in_progress_at": None if status in ("validating", "failed") else _seconds(batch.created_at),
            "expires_at": _seconds(batch.created_at + DAY_SECONDS),
            "finalizing_at": _seconds(batch.ended_at) if status == "completed" else None,
            **{name: None for name in ended.values()},
            **({ended[batch.outcome]: _seconds(batch.ended_at)} if batch.outcome else {}),
            "cancelling_at": _seconds(batch.cancel_requested_at),
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "errors": _FAILED_BATCH_ERRORS if batch.outcome == "failed" else None,
            "request_counts": {
                "total": len(batch.items),
                "completed": sum(r.kind == "succeeded" for r in batch.results),
                "failed": sum(r.kind == "errored" for r in batch.results),
            },
            "metadata": batch.metadata, "model": next((body.get("model") for _, body in batch.items), None),
        }

    def _anthropic_batch(self, batch: _Batch) -> dict:
        if batch.ended_at is not None:
            status = "ended"
        else:
            status = "in_progress" if batch.cancel_requested_at is None else "canceling"
        counts = {kind: sum(r.kind == kind for r in batch.results) for kind in ("succeeded", "errored", "canceled", "expired")}
        return {
            "id": batch.id, "type": "message_batch", "processing_status": status,
            "request_counts": {"processing": len(batch.items) - len(batch.results), **counts},
            "created_at": _iso(batch.created_at), "expires_at": _iso(batch.created_at + DAY_SECONDS),
            "ended_at": _iso(batch.ended_at), "cancel_initiated_at": _iso(batch.cancel_requested_at), "archived_at": None,
            "results_url": f"{self.anthropic_url}/v1/messages/batches/{batch.id}/results" if status == "ended" else None,
        }


def _openai_result_line(result: _ItemResult) -> dict:
    """An output- or error-file line; unanswered items carry no response and an `error` code, as OpenAI's do."""
    line = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": result.custom_id}
    if result.status is None:
        return {**line, "response": None, "error": _UNANSWERED_OPENAI_ERRORS[result.kind]}
    return {**line, "response": {"status_code": result.status, "request_id": result.request_id, "body": result.payload},
            "error": None}


def _anthropic_result_line(result: _ItemResult) -> dict:
    outcome = {"succeeded": {"message": result.payload}, "errored": {"error": result.payload}}.get(result.kind, {})
    return {"custom_id": result.custom_id, "result": {"type": result.kind, **outcome}}


def _read_body(handler) -> bytes:
    return handler.rfile.read(int(handler.headers.get("Content-Length", 0)))


def _multipart_fields(boundary: str, data: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields by name as (filename, bytes), split by hand so that a file's bytes come back exactly as sent."""
    fields = {}
    for part in data.split(b"--" + boundary.encode())[1:-1]:
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = email.message_from_bytes(head + b"\r\n\r\n")
        fields[headers.get_param("name", header="content-disposition")] = (headers.get_filename(), content.removesuffix(b"\r\n"))
    return fields


def _send(handler, status: int, payload: dict, headers: dict | None = None) -> None:
    _send_bytes(handler, status, json.dumps(payload).encode(), "application/json", headers)


def _send_bytes(handler, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("x-request-id", f"req_{time.time_ns()}")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    try:
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
