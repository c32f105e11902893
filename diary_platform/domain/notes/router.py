"""The note router: an ordered chain of language-model providers that always ends in a written note.

Per note: cloud providers are skipped in `local_only` mode and once the user's daily budget is spent;
a provider whose breaker is open is skipped; each call has the SDK's retries and a timeout, the note an
overall deadline. Quota errors open the provider's breaker; truncated, invalid or instruction-leaking
output gets one repair attempt, then the next model. The local writer is the last resort and never
fails. Every note records its provider, model, fallback path, HTTP attempts, tokens, latency and cost.
"""

import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, timezone
from pathlib import Path

import pybreaker
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from diary_platform.domain import instruments
from diary_platform.domain.notes import prompting
from diary_platform.domain.notes.breakers import breaker_for
from diary_platform.domain.notes.draft import DraftRejected, Mood, NoteDraft, check_draft, json_schema
from diary_platform.domain.notes.local import LocalNoteWriter
from diary_platform.domain.notes.note import Note, NoteRequest
from diary_platform.domain.notes.providers import Provider, ProviderFailure, ProviderSpec
from diary_platform.domain.notes.spend import call_cost, load_prices
from diary_platform.domain.shared_state import SharedState

MAX_CALL_TIMEOUT_SECONDS = 60.0
CONTEXT_SHARE_FOR_TRANSCRIPT = 0.6


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RouterConfig:
    """How notes are written: the providers in order and the limits around them (the LLM configuration file,
    read by llm_config.py). Values are checked when it is made: an unknown key or provider kind is an error."""

    providers: tuple[ProviderSpec, ...] = ()
    call_timeout_seconds: float = Field(default=30.0, gt=0, le=MAX_CALL_TIMEOUT_SECONDS)
    note_deadline_seconds: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    max_output_tokens: int = Field(default=1200, gt=0)
    breaker_fail_max: int = Field(default=3, gt=0)
    breaker_reset_seconds: float = Field(default=300.0, gt=0)
    budget_usd_per_user_per_day: float = Field(default=0.50, ge=0)
    # The share of a daily budget at which a warning goes out, before the cut-over to free providers at 100 %.
    budget_warning_share: float = Field(default=0.8, gt=0, le=1)
    redact: bool = True
    local_only: bool = False
    local_hosts: tuple[str, ...] = ()
    template: str = "diary_entry"
    templates_by_user: dict[str, str] = field(default_factory=dict)
    prices_file: str | None = None


class OutputTruncated(Exception):
    pass


@dataclass(frozen=True)
class _Route:
    """One provider of the chain: what it is, its SDK client, and the breaker every process shares for it."""

    spec: ProviderSpec
    provider: Provider
    breaker: pybreaker.CircuitBreaker
    local: bool


@dataclass
class _NoteInProgress:
    """One note being written: the request and its segments, its deadline, and what its calls have cost so far
    across providers and repairs (spend is booked to the request's user on the day it was recorded)."""

    request: NoteRequest
    segments: list[dict]
    template: str
    deadline: float
    path: list[str] = field(default_factory=list)
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    remarks: list[str] = field(default_factory=list)

    @property
    def user(self) -> str:
        return self.request.user

    @property
    def day(self) -> date:
        return self.request.recorded_at.astimezone(timezone.utc).date()

    def remark(self, remark: str) -> None:
        if remark not in self.remarks:
            self.remarks.append(remark)


class NoteRouter:
    def __init__(self, config: RouterConfig, state: SharedState, environ: dict | None = None):
        environ = os.environ if environ is None else environ
        self.config = config
        self.prices = load_prices(Path(config.prices_file) if config.prices_file else None)
        self.spend = state.spend
        self.local = LocalNoteWriter()
        self.chain: list[_Route] = []
        for spec in config.providers:
            key = environ.get(spec.api_key_env) if spec.api_key_env else None
            if spec.api_key_env and not key:
                continue  # not configured here: no key in the environment
            provider = Provider(spec, key, config.call_timeout_seconds, config.max_retries, config.max_output_tokens)
            breaker = breaker_for(
                state.breaker_storage(spec.name), config.breaker_fail_max, config.breaker_reset_seconds,
                exclude=[lambda error: not (isinstance(error, ProviderFailure) and error.kind == "unavailable")],
            )
            self.chain.append(_Route(spec, provider, breaker, spec.is_local(config.local_hosts)))

    def write(self, request: NoteRequest) -> Note:
        started = time.monotonic()
        note = _NoteInProgress(
            request=request,
            segments=request.segments or [{"start": 0.0, "end": 0.0, "text": request.transcript}],
            template=self.config.templates_by_user.get(request.user, self.config.template),
            deadline=started + self.config.note_deadline_seconds,
        )
        if request.transcript.strip():
            for route in self.chain:
                if not route.local and self.config.local_only:
                    note.path.append(f"{route.spec.name}:skipped(local_only)")
                    continue
                if not route.local and self.spend.spent(note.user, note.day) >= self.config.budget_usd_per_user_per_day:
                    note.path.append(f"{route.spec.name}:skipped(budget)")
                    note.remark("Daily budget reached: cloud providers skipped, written by a free provider.")
                    continue
                written = self._try_route(route, note)
                if written is not None:
                    return self._finish(written, note, started)
        fallback = self.local.write(request)
        note.path.append(f"{fallback.provider}/{fallback.model}:ok")
        return self._finish(fallback, note, started)

    def _finish(self, written: Note, note: _NoteInProgress, started: float) -> Note:
        return replace(
            written,
            fallback_path=list(note.path),
            attempts=note.attempts,
            input_tokens=note.input_tokens,
            output_tokens=note.output_tokens,
            cost_usd=round(note.cost_usd, 6),
            latency_seconds=time.monotonic() - started,
            remarks=list(note.remarks),
        )

    def _try_route(self, route: _Route, note: _NoteInProgress) -> Note | None:
        """The provider's models in order: a rejected request or an unusable answer moves to its next model,
        any other failure to the next provider."""
        name = route.spec.name
        for model in route.spec.models:
            if time.monotonic() >= note.deadline:
                note.path.append(f"{name}/{model}:skipped(deadline)")
                return None
            try:
                draft = self._draft(route, model, note)
            except pybreaker.CircuitBreakerError:
                note.path.append(f"{name}:skipped(breaker_open)")
                return None
            except ProviderFailure as failure:
                note.attempts += failure.http_attempts
                note.path.append(f"{name}/{model}:{failure.kind}")
                if failure.kind == "quota":
                    route.breaker.open()
                if failure.kind == "rejected":
                    continue
                return None
            except OutputTruncated:
                note.path.append(f"{name}/{model}:truncated")
                continue
            except DraftRejected:
                note.path.append(f"{name}/{model}:invalid_output")
                continue
            note.path.append(f"{name}/{model}:ok")
            return _note_from_draft(draft, name, model, note.segments, note.template)
        return None

    def _draft(self, route: _Route, model: str, note: _NoteInProgress) -> NoteDraft:
        template = prompting.load_template(note.template)
        redacted = self.config.redact and not route.local
        budget = int(route.spec.context_tokens * CONTEXT_SHARE_FOR_TRANSCRIPT)
        drafts = []
        for first, chunk in prompting.split_segments(note.segments, budget):
            transcript = prompting.render_transcript(chunk, redacted, first_index=first)
            messages = prompting.messages(template, transcript, json_schema())
            drafts.append(self._checked(route, model, messages, note))
        return drafts[0] if len(drafts) == 1 else _reduce(drafts)

    def _checked(self, route: _Route, model: str, messages: list[dict], note: _NoteInProgress) -> NoteDraft:
        """One call, and one repair call when the output is unusable."""
        text = self._call(route, model, messages, note)
        segment_count = len(note.segments)
        try:
            return check_draft(text, segment_count, prompting.PROMPT_FINGERPRINTS)
        except DraftRejected as rejected:
            repair = messages + [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"That answer was rejected: {rejected} Reply with the corrected JSON object only."},
            ]
            return check_draft(self._call(route, model, repair, note), segment_count, prompting.PROMPT_FINGERPRINTS)

    def _call(self, route: _Route, model: str, messages: list[dict], note: _NoteInProgress) -> str:
        remaining = note.deadline - time.monotonic()
        if remaining <= 0:
            raise ProviderFailure("unavailable", "the note's deadline has passed", 0)
        timeout = min(self.config.call_timeout_seconds, remaining / (self.config.max_retries + 1))
        completion = route.breaker.call(route.provider.complete, model, messages, json_schema(), timeout)
        note.attempts += completion.http_attempts
        note.input_tokens += completion.input_tokens
        note.output_tokens += completion.output_tokens
        cost = call_cost(self.prices, model, completion.input_tokens, completion.output_tokens)
        note.cost_usd += cost
        total = self.spend.add(note.user, note.day, cost)
        budget_alerts(note.user, total - cost, total, self.config.budget_usd_per_user_per_day, self.config.budget_warning_share)
        if completion.truncated:
            raise OutputTruncated(model)
        return completion.text


def budget_crossings(before: float, after: float, budget: float, warning_share: float) -> list[str]:
    """The thresholds one booking crossed, from `before` to `after`: "warning" at the share, "exhausted" at the budget."""
    levels = (("warning", budget * warning_share), ("exhausted", budget))
    return [level for level, threshold in levels if before < threshold <= after]


def budget_alerts(user: str, before: float, after: float, budget: float, warning_share: float) -> list[str]:
    """Each threshold crossed becomes an event on the current span and a count, once per user and day: only
    the booking that crosses it sees it, however many processes book at once (the total is atomic)."""
    crossed = budget_crossings(before, after, budget, warning_share)
    meters = instruments.current()
    for level in crossed:
        meters.budget_alerts.add(1, {"scope": "user", "level": level})
        instruments.current_span().add_event(
            f"diary.budget.{level}",
            {"diary.user": user, "diary.budget.spent_usd": after, "diary.budget.limit_usd": budget, "diary.budget.share": after / budget},
        )
    return crossed


def _reduce(drafts: list[NoteDraft]) -> NoteDraft:
    """Map-reduce's reduce step: the chunks' notes joined in order, names once, the commonest mood."""

    def merged(attribute: str, unique: bool) -> list:
        items, seen = [], set()
        for draft in drafts:
            for item in getattr(draft, attribute):
                if unique and item.text.lower() in seen:
                    continue
                seen.add(item.text.lower())
                items.append(item)
        return items

    mood = Counter(d.mood.label for d in drafts).most_common(1)[0][0]
    mood_segments = [s for d in drafts if d.mood.label == mood for s in d.mood.segments][:20]
    return NoteDraft.model_construct(  # every part was validated; the whole may be longer than one answer
        title=drafts[0].title,
        summary=" ".join(d.summary for d in drafts)[:1500],
        events=merged("events", False),
        people=merged("people", True),
        places=merged("places", True),
        todos=merged("todos", False),
        mood=Mood(label=mood, segments=mood_segments),
    )


def _note_from_draft(draft: NoteDraft, provider: str, model: str, segments: list[dict], template: str) -> Note:
    citations = []
    for field_name in ("events", "people", "places", "todos"):
        for item in getattr(draft, field_name):
            cited = [segments[i] for i in item.segments]
            citations.append(
                {
                    "field": field_name,
                    "text": item.text,
                    "segments": item.segments,
                    "start": min(s["start"] for s in cited),
                    "end": max(s["end"] for s in cited),
                }
            )
    return Note(
        title=draft.title,
        summary=draft.summary,
        events=[i.text for i in draft.events],
        people=[i.text for i in draft.people],
        places=[i.text for i in draft.places],
        todos=[i.text for i in draft.todos],
        mood=draft.mood.label,
        provider=provider,
        model=model,
        template=template,
        citations=citations,
    )
