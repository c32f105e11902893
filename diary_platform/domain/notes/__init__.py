"""Diary notes and digests: the writers, the language-model router and what its calls cost.

- note.py: `NoteRequest`, `Note`, the `NoteWriter` interface.
- local.py: `LocalNoteWriter`, offline and never failing.
- router.py: `RouterConfig`, `NoteRouter`: routes by priority and length, breakers, budget, deadline, local
  fallback; batches submitted and collected.
- providers.py: `ProviderSpec`, `Provider`: the OpenAI and Anthropic SDKs behind one call.
- draft.py: `NoteDraft`, `check_draft`: the structured answer a model must give, with citations.
- prompting.py: templates and the transcript as delimited, numbered data.
- breakers.py: circuit breakers whose state every process shares (files or Postgres).
- spend.py: price tables, `TokenUsage`, `call_cost` (batch and cached rates), `DailySpend` per user and day.
- batch_api.py: the OpenAI Batch and Anthropic Message Batches APIs: submit, find, state, results, cancel.
- note_batches.py: the record of each provider batch, made before it is sent (files or Postgres).
- batch_poller.py: `poll_round`: which batches to ask, when, and which to collect.
- genai.py: what an LLM call's span and GenAI client metrics carry (OpenTelemetry GenAI semantic conventions).
- digest.py: `write_digests`: one entry per user and day from that day's notes.
"""
