"""Diary notes: what a note writer is given, what it returns, and the interface every writer meets.

Writers take a `NoteRequest` (the transcript and who/when it is from) and return a `Note`. The LLM
router (OpenAI, Anthropic, local servers) and the local writer (local.py) are both `NoteWriter`s.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class NoteRequest:
    recording_id: str
    user: str
    recorded_at: datetime
    transcript: str
    segments: list[dict] = field(default_factory=list)
    priority: str | None = None  # the landing tag; the router resolves it to urgent, normal or bulk
    template: str | None = None  # asked for with the upload; else the user's, else the configured one
    first_choice: tuple[str, str] | None = None  # (provider, model) tried first: an A/B experiment's candidate


@dataclass(frozen=True)
class Note:
    title: str
    summary: str
    events: list[str]
    people: list[str]
    places: list[str]
    todos: list[str]
    mood: str
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_seconds: float = 0.0
    template: str = "diary_entry"
    fallback_path: list[str] = field(default_factory=list)
    attempts: int = 0
    citations: list[dict] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)
    priority: str | None = None
    route: str | None = None
    delivery: str = "synchronous"
    note_batch: str | None = None
    cached_input_tokens: int = 0
    saved_usd: float = 0.0

    def to_markdown(self, recorded_at: datetime) -> str:
        def section(heading: str, items: list[str]) -> list[str]:
            return [f"## {heading}", *(f"- {item}" for item in items), ""] if items else []

        lines = [f"# {self.title}", "", f"*{recorded_at:%A %d %B %Y, %H:%M} UTC · mood: {self.mood}*", ""]
        lines += [self.summary, ""]
        lines += section("What happened", self.events)
        lines += section("People", self.people)
        lines += section("Places", self.places)
        lines += section("To do", [f"[ ] {todo}" for todo in self.todos])
        lines += [f"> {remark}" for remark in self.remarks] + ([""] if self.remarks else [])
        lines.append(f"<sub>written by {self.provider} ({self.model})</sub>")
        return "\n".join(lines) + "\n"


class NoteWriter(Protocol):
    def write(self, request: NoteRequest) -> Note: ...
