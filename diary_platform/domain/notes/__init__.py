"""Diary notes and digests: the writers, the language-model router and what its calls cost.

- note.py: `NoteRequest`, `Note`, the `NoteWriter` interface.
- local.py: `LocalNoteWriter`, offline and never failing.
- router.py: `RouterConfig`, `NoteRouter`: providers in order, breakers, budget, deadline, local fallback.
- providers.py: `ProviderSpec`, `Provider`: the OpenAI and Anthropic SDKs behind one call.
- draft.py: `NoteDraft`, `check_draft`: the structured answer a model must give, with citations.
- prompting.py: templates and the transcript as delimited, numbered data.
- breakers.py: circuit breakers whose state every process shares (files or Postgres).
- spend.py: price tables, `call_cost`, `DailySpend` per user and day (files or Postgres).
- digest.py: `write_digests`: one entry per user and day from that day's notes.
"""
