"""The note router: an ordered chain of language-model providers that always ends in a written note.

Which chain: the note's priority (its landing sub-folder `urgent`, `normal` or `bulk`, else the user's
default, else the configured default) picks a route of the configuration's `priorities`, and a transcript
over the route's length threshold takes the route's `long` chain. A route with `batch: true` lets its notes
wait for a provider batch (`submit`, then `collect` once the poller sees it ended); everything else, and
every batch answer that is missing or unusable, is written at once (`write`).

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
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pybreaker
from opentelemetry.trace import SpanKind
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from diary_platform.domain import instruments
from diary_platform.domain.notes import batch_api, genai, prompting
from diary_platform.domain.notes.breakers import breaker_for
from diary_platform.domain.notes.draft import DraftRejected, Mood, NoteDraft, check_draft, json_schema
from diary_platform.domain.notes.local import LocalNoteWriter
from diary_platform.domain.notes.note import Note, NoteRequest
from diary_platform.domain.notes.note_batches import COLLECTED, OPEN, NoteBatch, note_batch_id
from diary_platform.domain.notes.providers import Completion, Provider, ProviderFailure, ProviderSpec
from diary_platform.domain.notes.spend import TokenUsage, call_cost, list_cost, load_prices
from diary_platform.domain.shared_state import SharedState

MAX_CALL_TIMEOUT_SECONDS = 60.0
CONTEXT_SHARE_FOR_TRANSCRIPT = 0.6
FIRST_POLL_SECONDS = 60.0
Priority = Literal["urgent", "normal", "bulk"]
PRIORITIES: tuple[str, ...] = Priority.__args__
SYNCHRONOUS, BATCH = "synchronous", "batch"


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LongTranscripts:
    """Transcripts over `over_tokens` (about four characters a token) take this chain instead."""

    over_tokens: int = Field(gt=0)
    chain: tuple[str, ...] = Field(min_length=1)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PriorityRoute:
    """How the notes of one priority are written. `chain`: `provider/model` or `provider` (all its models),
    in order; empty means every provider in the configured order. `batch`: the notes may wait for the
    first provider's batch API (half price, within 24 hours)."""

    chain: tuple[str, ...] = ()
    batch: bool = False
    long: LongTranscripts | None = None


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
    default_priority: Priority = "normal"
    priority_by_user: dict[str, Priority] = field(default_factory=dict)
    priorities: dict[Priority, PriorityRoute] = field(default_factory=dict)

    @model_validator(mode="after")
    def _routes_name_configured_providers(self) -> "RouterConfig":
        names = {spec.name for spec in self.providers}
        for priority, route in self.priorities.items():
            chains = [route.chain, route.long.chain if route.long else ()]
            unknown = sorted({entry.split("/", 1)[0] for chain in chains for entry in chain} - names)
            if unknown:
                raise ValueError(f"priorities.{priority} names providers that are not configured: {', '.join(unknown)}")
            if priority == "urgent" and route.batch:
                raise ValueError("priorities.urgent: urgent notes are written at once, they cannot wait for a batch")
        return self

    def priority_of(self, tag: str | None, user: str) -> str:
        """The recording's landing tag when it names a priority, else the user's default, else the platform's."""
        return tag if tag in PRIORITIES else self.priority_by_user.get(user, self.default_priority)


class OutputTruncated(Exception):
    pass


@dataclass(frozen=True)
class _Route:
    """One provider of the chain: what it is, its SDK client, and the breaker every process shares for it."""

    spec: ProviderSpec
    provider: Provider
    breaker: pybreaker.CircuitBreaker
    local: bool


@dataclass(frozen=True)
class Plan:
    """A note's priority, the route that serves it (`bulk/long`: the long-transcript chain of `bulk`), each
    provider of its chain with the models to try there, and whether it may wait for a batch."""

    priority: str
    route: str
    steps: list[tuple[_Route, tuple[str, ...]]]
    batch: bool


@dataclass
class _NoteInProgress:
    """One note being written: the request and its segments, its deadline, and what its calls have cost so far
    across providers and repairs (spend is booked to the request's user on the day it was recorded)."""

    request: NoteRequest
    segments: list[dict]
    template: str
    deadline: float
    plan: Plan
    path: list[str] = field(default_factory=list)
    attempts: int = 0
    usage: TokenUsage = TokenUsage()
    cost_usd: float = 0.0
    list_usd: float = 0.0
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
        self.state = state
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
        """The note, written now: the plan's chain, then the free providers, then the local writer."""
        started = time.monotonic()
        note = self._start(request, started)
        return self._finish(self._write_now(note), note, started)

    def plan(self, request: NoteRequest) -> Plan:
        """The route a note takes: its priority's chain (the long one past the length threshold), each entry
        resolved to a provider that has a key here, then every free provider the chain leaves out."""
        priority = self.config.priority_of(request.priority, request.user)
        route = self.config.priorities.get(priority, PriorityRoute())
        entries, name = route.chain, priority
        if route.long and prompting.estimate_tokens(request.transcript) > route.long.over_tokens:
            entries, name = route.long.chain, f"{priority}/long"
        steps: list[tuple[_Route, tuple[str, ...]]] = []
        for entry in entries:
            provider, _, model = entry.partition("/")
            found = next((r for r in self.chain if r.spec.name == provider), None)
            if found is None:
                continue
            models = (model,) if model else found.spec.models
            if steps and steps[-1][0] is found:
                steps[-1] = (found, steps[-1][1] + models)
            else:
                steps.append((found, models))
        if not entries:
            steps = [(r, r.spec.models) for r in self.chain]
        first = self._route(request.first_choice[0]) if request.first_choice else None
        if first is not None:  # an experiment's candidate model first, the route after it
            steps.insert(0, (first, (request.first_choice[1],)))
        named = {r.spec.name for r, _ in steps}
        steps += [(r, r.spec.models) for r in self.chain if r.local and r.spec.name not in named]
        return Plan(priority, name, steps, route.batch)

    def waits_for(self, request: NoteRequest) -> tuple[str, str] | None:
        """(provider, model) of the batch this note may wait for, or None when it must be written now: its
        route does not batch, or its first provider has no batch API, is local, has an open breaker, or
        the user's budget for the day is spent."""
        plan = self.plan(request)
        if not plan.batch or not plan.steps or self.config.local_only:
            return None
        route, models = plan.steps[0]
        day = request.recorded_at.astimezone(timezone.utc).date()
        if route.local or not batch_api.supports_batches(route.provider) or route.breaker.current_state == pybreaker.STATE_OPEN:
            return None
        if self.spend.spent(request.user, day) >= self.config.budget_usd_per_user_per_day:
            return None
        return route.spec.name, models[0]

    def submit(self, batch_key: str, provider: str, model: str, requests: list[NoteRequest], now: datetime) -> NoteBatch | None:
        """One provider batch for `requests`, recorded before it is sent and once the provider has its id;
        the same requests again get the same record back, never a second batch. None when the provider
        refused the batch (its notes are then written at once)."""
        route = self._route(provider)
        transcripts = {r.recording_id: r.transcript for r in requests}
        fresh = NoteBatch(
            note_batch_id(batch_key, provider, model, transcripts), batch_key, provider, model, sorted(transcripts),
            created_at=now, next_poll_at=now + timedelta(seconds=FIRST_POLL_SECONDS),
        )
        record = self.state.note_batches.create(fresh)
        if record.status == COLLECTED and record.remote_id is None:
            return None
        if record.remote_id is not None or route is None:
            return record if record.remote_id is not None else None
        try:
            remote = None if record is fresh else batch_api.find(route.provider, record.id)
            if remote is None:
                items = [(batch_api.custom_id(r.recording_id, i), messages) for r in requests
                         for i, messages in enumerate(self._chunk_messages(route, self._start(r, time.monotonic())))]
                remote = batch_api.submit(route.provider, model, items, json_schema(), record.id)
        except ProviderFailure as failure:
            self.state.note_batches.save(replace(record, status=COLLECTED, outcome=f"not_submitted({failure.kind})"))
            return None
        submitted = replace(record, remote_id=remote, status=OPEN)
        self.state.note_batches.save(submitted)
        return submitted

    def poll(self, record: NoteBatch) -> batch_api.BatchState:
        """Where the provider's batch stands. A provider no longer configured here has nothing more to give."""
        route = self._route(record.provider)
        if route is None or record.remote_id is None:
            return batch_api.BatchState(True, "provider_unavailable")
        return batch_api.state(route.provider, record.remote_id)

    def cancel(self, record: NoteBatch) -> None:
        """Ask the provider to stop a batch whose notes are written another way (best effort: it may be gone)."""
        route = self._route(record.provider)
        if route is not None and record.remote_id is not None:
            try:
                batch_api.cancel(route.provider, record.remote_id)
            except ProviderFailure:
                pass

    def collect(self, record: NoteBatch, requests: list[NoteRequest]) -> dict[str, Note]:
        """The notes of an ended batch, by recording: each from its batch answers (booked at the batch price)
        when they are all there and valid, else written at once like any other note."""
        route = self._route(record.provider)
        answers: dict = {}
        unreadable = None
        if route and record.remote_id:
            try:
                answers = batch_api.results(route.provider, record.remote_id)
            except ProviderFailure as failure:  # no waiting on a provider that just said the batch ended: written now
                unreadable = failure.kind
        notes = {}
        for request in requests:
            started = time.monotonic()
            note = self._start(request, started)
            if unreadable:
                note.path.append(f"{record.provider}/{record.model}:batch_results_{unreadable}")
            written = self._from_answers(route, record.model, note, answers) if route and not unreadable else None
            if written is None:
                written = self._write_now(note)
            notes[request.recording_id] = self._finish(written, note, started, note_batch=record.id)
        return notes

    def _from_answers(self, route: _Route, model: str, note: _NoteInProgress, answers: dict) -> Note | None:
        name = route.spec.name
        chunks = self._chunk_messages(route, note)
        found = [answers.get(batch_api.custom_id(note.request.recording_id, i)) for i in range(len(chunks))]
        if not all(isinstance(answer, Completion) for answer in found):
            failure = next((a for a in found if isinstance(a, ProviderFailure)), None)
            note.path.append(f"{name}/{model}:batch_{failure.kind if failure else 'missing'}")
            return None
        drafts = []
        for completion in found:
            self._trace_batch_answer(route, model, completion)
            self._book(note, model, completion)
            try:
                if completion.truncated:
                    raise OutputTruncated(model)
                drafts.append(check_draft(completion.text, len(note.segments), prompting.PROMPT_FINGERPRINTS))
            except (OutputTruncated, DraftRejected):
                note.path.append(f"{name}/{model}:batch_invalid_output")
                return None
        note.path.append(f"{name}/{model}:batch_ok")
        draft = drafts[0] if len(drafts) == 1 else _reduce(drafts)
        return replace(_note_from_draft(draft, name, model, note.segments, note.template), delivery=BATCH)

    def _route(self, provider: str) -> _Route | None:
        return next((r for r in self.chain if r.spec.name == provider), None)

    def _start(self, request: NoteRequest, started: float) -> _NoteInProgress:
        return _NoteInProgress(
            request=request,
            segments=request.segments or [{"start": 0.0, "end": 0.0, "text": request.transcript}],
            template=request.template or self.config.templates_by_user.get(request.user, self.config.template),
            deadline=started + self.config.note_deadline_seconds,
            plan=self.plan(request),
        )

    def _write_now(self, note: _NoteInProgress) -> Note:
        if note.request.transcript.strip():
            for route, models in note.plan.steps:
                if not route.local and self.config.local_only:
                    note.path.append(f"{route.spec.name}:skipped(local_only)")
                    continue
                if not route.local and self.spend.spent(note.user, note.day) >= self.config.budget_usd_per_user_per_day:
                    note.path.append(f"{route.spec.name}:skipped(budget)")
                    note.remark("Daily budget reached: cloud providers skipped, written by a free provider.")
                    continue
                written = self._try_route(route, models, note)
                if written is not None:
                    return written
        fallback = self.local.write(note.request)
        note.path.append(f"{fallback.provider}/{fallback.model}:ok")
        return fallback

    def _finish(self, written: Note, note: _NoteInProgress, started: float, note_batch: str | None = None) -> Note:
        return replace(
            written,
            fallback_path=list(note.path),
            attempts=note.attempts,
            input_tokens=note.usage.input_tokens,
            output_tokens=note.usage.output_tokens,
            cached_input_tokens=note.usage.cached_input_tokens,
            cost_usd=round(note.cost_usd, 6),
            saved_usd=round(max(note.list_usd - note.cost_usd, 0.0), 6),
            latency_seconds=time.monotonic() - started,
            remarks=list(note.remarks),
            priority=note.plan.priority,
            route=note.plan.route,
            note_batch=note_batch,
        )

    def _try_route(self, route: _Route, models: tuple[str, ...], note: _NoteInProgress) -> Note | None:
        """The provider's models in order: a rejected request or an unusable answer moves to its next model,
        any other failure to the next provider."""
        name = route.spec.name
        for model in models:
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

    def _chunk_messages(self, route: _Route, note: _NoteInProgress) -> list[list[dict]]:
        """The note's requests to `route`: one per chunk of the transcript that fits the provider's context,
        redacted for providers off this machine."""
        template = prompting.load_template(note.template)
        redacted = self.config.redact and not route.local
        budget = int(route.spec.context_tokens * CONTEXT_SHARE_FOR_TRANSCRIPT)
        return [
            prompting.messages(template, prompting.render_transcript(chunk, redacted, first_index=first), json_schema())
            for first, chunk in prompting.split_segments(note.segments, budget)
        ]

    def _draft(self, route: _Route, model: str, note: _NoteInProgress) -> NoteDraft:
        drafts = [self._checked(route, model, messages, note) for messages in self._chunk_messages(route, note)]
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
        completion = route.breaker.call(self._traced_complete, route, model, messages, timeout)
        self._book(note, model, completion)
        if completion.truncated:
            raise OutputTruncated(model)
        return completion.text

    def _traced_complete(self, route: _Route, model: str, messages: list[dict], timeout: float) -> Completion:
        """The provider call as a GenAI `chat` span, with the GenAI client metrics. It runs inside the breaker, so that a
        call the open breaker refuses leaves no span, and a failure that trips the breaker is still recorded as itself."""
        meters = instruments.current()
        schema = json_schema()
        build_body = route.provider.anthropic_body if route.spec.kind == "anthropic" else route.provider.openai_body
        body = build_body(model, messages, schema)  # the request as sent, for its attributes and (if asked for) content
        metric_attributes = genai.genai_attributes(route, model)
        span_attributes = {**genai.span_attributes(route, metric_attributes, SYNCHRONOUS), **genai.request_attributes(body)}
        if genai.captures_message_content():
            span_attributes.update(genai.sent_content(body))
        started = time.monotonic()
        with meters.tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=span_attributes) as span:
            try:
                completion = route.provider.complete(model, messages, schema, timeout)
            except Exception as error:  # recorded, then handled by the breaker and the router as before
                error_type = genai.error_type(error)
                span.set_attribute("error.type", error_type)
                if isinstance(error, ProviderFailure):
                    span.set_attributes({"diary.outcome": error.kind, "diary.attempts": error.http_attempts})
                meters.genai_operation_duration.record(time.monotonic() - started, {**metric_attributes, "error.type": error_type})
                raise
            answered = {**metric_attributes, **genai.present({"gen_ai.response.model": completion.response_model})}
            meters.genai_operation_duration.record(time.monotonic() - started, answered)
            meters.genai_token_usage.record(completion.usage.input_tokens, {**answered, "gen_ai.token.type": "input"})
            meters.genai_token_usage.record(completion.usage.output_tokens, {**answered, "gen_ai.token.type": "output"})
            span.set_attributes(genai.answer_attributes(completion, call_cost(self.prices, model, completion.usage)))
            if genai.captures_message_content():
                span.set_attributes(genai.received_content(completion))
        return completion

    def _trace_batch_answer(self, route: _Route, model: str, completion: Completion) -> None:
        """A batch answer as a `chat` span beside the synchronous calls, for its tokens, cost and response id. INTERNAL
        and without the client metrics: the batch API made the call, hours before."""
        attributes = {**genai.span_attributes(route, genai.genai_attributes(route, model), BATCH),
                      **genai.answer_attributes(completion, call_cost(self.prices, model, completion.usage))}
        instruments.current().tracer.start_span(f"chat {model}", kind=SpanKind.INTERNAL, attributes=attributes).end()

    def _book(self, note: _NoteInProgress, model: str, completion: Completion) -> None:
        """A call's tokens and price on the note, and on the user's spend for the day (which may cross a budget line)."""
        note.attempts += completion.http_attempts
        note.usage += completion.usage
        cost = call_cost(self.prices, model, completion.usage)
        note.cost_usd += cost
        note.list_usd += list_cost(self.prices, model, completion.usage)
        total = self.spend.add(note.user, note.day, cost)
        budget_alerts(note.user, total - cost, total, self.config.budget_usd_per_user_per_day, self.config.budget_warning_share)


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
