"""A local server that speaks OpenAI's /v1/chat/completions and Anthropic's /v1/messages, with scripted faults.

The real SDK clients are pointed at it with `base_url`. Each (API, model) has a queue of behaviours;
when the queue is empty the answer is a valid note. Every request is logged for assertions.
"""

import json
import re
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPENAI = "openai"
ANTHROPIC = "anthropic"


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


def _transcript_of(body: dict) -> str:
    texts = [m["content"] for m in body.get("messages", []) if isinstance(m.get("content"), str)]
    return next((t for t in reversed(texts) if "\n<transcript>\n" in t), "")


class FakeLLM:
    def __init__(self):
        self.log: list[dict] = []
        self.scripts: dict[tuple[str, str], deque] = defaultdict(deque)
        self.stall_seconds = 3.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def script(self, api: str, model: str, *behaviours: str) -> None:
        self.scripts[(api, model)].extend(behaviours)

    def requests(self, api: str | None = None, model: str | None = None) -> list[dict]:
        return [r for r in self.log if (api is None or r["api"] == api) and (model is None or r["model"] == model)]

    def __enter__(self) -> "FakeLLM":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api = OPENAI if self.path.endswith("/chat/completions") else ANTHROPIC
                model = body.get("model", "")
                queue = fake.scripts[(api, model)]
                behaviour = queue.popleft() if queue else "ok"
                fake.log.append({"api": api, "model": model, "behaviour": behaviour, "body": body, "time": time.time()})
                fake._respond(self, api, model, behaviour, body)

        return Handler

    def _respond(self, handler, api: str, model: str, behaviour: str, body: dict) -> None:
        transcript = _transcript_of(body)
        errors = {
            "rate_limit": (429, "rate_limit_exceeded", "rate_limit_error", "Rate limit reached. Please retry.", {"retry-after": "0.01"}),
            "server_error": (500, "server_error", "api_error", "The server had an error.", {}),
            "overloaded": (529, "overloaded", "overloaded_error", "Overloaded", {}),
            "quota": (429, "insufficient_quota", "rate_limit_error",
                      "You exceeded your current quota (insufficient_quota); your spend limit is reached.", {}),
            "auth": (401, "invalid_api_key", "authentication_error", "Invalid API key.", {}),
            "not_found": (404, "model_not_found", "not_found_error", f"The model {model} does not exist.", {}),
            "bad_request": (400, "invalid_request_error", "invalid_request_error", "Unsupported parameter.", {}),
            "unprocessable": (422, "unprocessable_entity", "invalid_request_error", "Unprocessable request.", {}),
        }
        if behaviour == "stall":
            time.sleep(self.stall_seconds)
            behaviour = "ok"
        if behaviour in errors:
            status, code, anthropic_type, message, headers = errors[behaviour]
            if api == OPENAI:
                payload = {"error": {"message": message, "type": code, "param": None, "code": code}}
            else:
                payload = {"type": "error", "error": {"type": anthropic_type, "message": message}}
            return _send(handler, status, payload, headers)
        note = valid_note(transcript)
        if behaviour == "schema_break":
            note = {"title": "Missing everything else"}
        if behaviour == "bad_citation":
            note["events"].append({"text": "Something nobody said", "segments": [len(note["events"]) + 7]})
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
            payload = {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{
                    "index": 0, "logprobs": None, "finish_reason": "length" if truncated else "stop",
                    "message": {"role": "assistant", "content": content[:40] if truncated else content, "refusal": None},
                }],
                "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out, "total_tokens": usage_in + usage_out},
            }
        else:
            block = (
                {"type": "text", "text": content[:40]} if truncated or behaviour == "malformed"
                else {"type": "tool_use", "id": "toolu_fake", "name": "write_note", "input": json.loads(content)}
            )
            payload = {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [block],
                "stop_reason": "max_tokens" if truncated else "tool_use", "stop_sequence": None,
                "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
            }
        _send(handler, 200, payload, {})


def _send(handler, status: int, payload: dict, headers: dict) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("x-request-id", f"req_{time.time_ns()}")
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    try:
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
