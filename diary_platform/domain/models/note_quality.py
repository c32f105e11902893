"""Note quality on the golden set: is every fact a note states backed by the transcript segment it cites?

The note checks (draft.py) already refuse citations of segments that do not exist; this measures what
they cannot: a fact that cites a real segment which does not say it. An item is supported when at least
half of its content words (letters and digits, longer than two characters, not a stop word) appear in the
segments it cites (in the whole transcript for a writer that does not cite, the local one); an item
without content words is supported.
Per note-writing model: the share of unsupported items, and how many of the references' key facts (the
manifest's `facts`) the notes mention. The transcripts are the references themselves, a segment a
sentence, so that transcription errors do not count against the note writer.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import polars as pl

from diary_platform.domain.notes.note import Note, NoteRequest

NOTE_QUALITY = "note_quality"
SUPPORTED_SHARE = 0.5
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = set(
    "the and for with that this was were are has have had but not you your she her his him they them their our "
    "from into about after before then than there here when what who how all any can could would should will "
    "just very also some more most out off over under again once did does doing been being its it's i'm".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP_WORDS}


def unsupported_items(note: Note, segments: list[dict]) -> tuple[int, list[str]]:
    """(items the note states, the texts of those the transcript does not back): a cited item against the
    segments it cites, an item without citations (the local writer's) against the whole transcript."""
    cited = {(c["field"], c["text"]): c["segments"] for c in note.citations}
    everything = set().union(*(content_words(s["text"]) for s in segments)) if segments else set()
    unsupported, items = [], 0
    for field_name in ("events", "people", "places", "todos"):
        for text in getattr(note, field_name):
            items += 1
            indexes = cited.get((field_name, text))
            backing = everything if indexes is None else set().union(
                *(content_words(segments[i]["text"]) for i in indexes if 0 <= i < len(segments))
            )
            words = content_words(text)
            if indexes == [] or (words and len(words & backing) / len(words) < SUPPORTED_SHARE):
                unsupported.append(text)
    return items, unsupported


@dataclass(frozen=True)
class GoldenNote:
    """A golden clip as note-writing input: its reference, one segment a sentence, and its key facts."""

    name: str
    segments: list[dict]
    facts: tuple[str, ...]


def golden_note(name: str, text: str, facts: tuple[str, ...]) -> GoldenNote:
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    segments = [{"start": float(i * 5), "end": float(i * 5 + 5), "text": sentence} for i, sentence in enumerate(sentences)]
    return GoldenNote(name, segments, facts)


def evaluate_notes(write: Callable[[NoteRequest], Note], models: dict[str, tuple[str, str] | None], golden: list[GoldenNote]) -> pl.DataFrame:
    """One row per note-writing model (id -> (provider, model), None for the platform's own route): notes,
    items, unsupported items and their share, key facts mentioned, who actually wrote the notes."""
    rows = []
    now = datetime.now(timezone.utc)
    for model_id, first_choice in models.items():
        items = unsupported = facts = found = 0
        writers: set[str] = set()
        examples: list[str] = []
        for index, clip in enumerate(golden):
            request = NoteRequest(f"{index:024x}", "golden-set", now, " ".join(s["text"] for s in clip.segments), clip.segments,
                                  priority="urgent", first_choice=first_choice)
            note = write(request)
            writers.add(f"{note.provider}/{note.model}")
            stated, missing = unsupported_items(note, clip.segments)
            items += stated
            unsupported += len(missing)
            examples += missing[:1]
            text = note.to_markdown(now).lower()
            facts += len(clip.facts)
            found += sum(1 for fact in clip.facts if fact.lower() in text)
        rows.append({
            "model_id": model_id, "notes": len(golden), "items": items, "unsupported": unsupported,
            "unsupported_share": unsupported / items if items else 0.0, "facts": facts,
            "facts_mentioned": found / facts if facts else None, "written_by": ", ".join(sorted(writers)),
            "unsupported_examples": examples[:3],
        })
    return pl.DataFrame(rows, schema={
        "model_id": pl.Utf8, "notes": pl.Int64, "items": pl.Int64, "unsupported": pl.Int64, "unsupported_share": pl.Float64,
        "facts": pl.Int64, "facts_mentioned": pl.Float64, "written_by": pl.Utf8, "unsupported_examples": pl.List(pl.Utf8),
    })
