"""The local note writer (structured, grounded in the transcript, never failing) and the checks on a model's draft."""

import json
from datetime import datetime, timezone

import pytest

from diary_platform.domain.notes.draft import DraftRejected, check_draft
from diary_platform.domain.notes.local import LocalNoteWriter
from diary_platform.domain.notes.note import NoteRequest

WHEN = datetime(2026, 11, 26, 18, 30, tzinfo=timezone.utc)


def _note(text: str):
    return LocalNoteWriter().write(NoteRequest("r" * 24, "alice", WHEN, text))


def test_a_diary_entry_becomes_a_structured_note():
    note = _note(
        "Today I walked to the market and bought fresh bread. In the afternoon I met my sister Anna "
        "for coffee and we talked about her new job in Berlin. I felt tired but happy when I got home. "
        "I need to call the dentist tomorrow."
    )
    assert note.title.startswith("Today I walked to the market")
    assert note.people == ["Anna"]
    assert "Berlin" in note.places and "market" in note.places
    assert note.todos == ["I need to call the dentist tomorrow"]
    assert len(note.events) == 3
    assert note.mood.startswith("mixed")
    markdown = note.to_markdown(WHEN)
    assert markdown.startswith("# Today I walked")
    assert "## To do\n- [ ] I need to call the dentist tomorrow" in markdown
    assert "Thursday 26 November 2026, 18:30" in markdown
    assert (note.provider, note.input_tokens, note.cost_usd) == ("local", 0, 0.0)


def test_imperative_reminders_are_todos_and_family_are_people():
    note = _note("Short note. Buy milk and eggs. Send the photos to Grandma.")
    assert note.todos == ["Buy milk and eggs", "Send the photos to Grandma"]
    assert note.people == ["Grandma"] and note.places == []


@pytest.mark.parametrize(
    ("transcript", "people", "places"),
    [
        # sentence breaks the model lost: segments joined with their capitals
        ("I went home But it was late And It rained So I stayed in Then Maria called", ["Maria"], []),
        ("Well, I think So. And then We went to the park. But Tom said It was closed.", ["Tom"], ["park"]),
        # a common word capitalised mid-sentence, and written in lower case elsewhere
        ("We had Dinner at home. The dinner was cold. Later I drove to Leeds with Priya.", ["Priya"], ["Leeds"]),
        # interjections, days and months, and shouting in capitals
        ("Okay, Yeah, Monday was long. In March we Will see. OK THEN, Anyway I met Ben in Oslo.", ["Ben"], ["Oslo"]),
        # a name that opens a sentence is found where it appears inside one
        ("Anna called me. Later I met Anna and Jo at the station.", ["Anna", "Jo"], ["station"]),
    ],
)
def test_people_and_places_are_names_not_the_capitals_of_sentence_starts(transcript, people, places):
    note = _note(transcript)
    assert (note.people, note.places) == (people, places)


def test_an_empty_transcript_still_gets_a_note():
    note = _note("   ")
    assert note.title == "No speech recorded"
    assert note.to_markdown(WHEN).startswith("# No speech recorded")


def _draft_json(segments: list[int], **overrides) -> str:
    draft = {
        "title": "A walk", "summary": "I walked.", "people": [], "places": [], "todos": [],
        "events": [{"text": "Walked to the market", "segments": segments}],
        "mood": {"label": "neutral", "segments": []},
        **overrides,
    }
    return json.dumps(draft)


@pytest.mark.parametrize("segments", [[2], [-1], [0, 5], [100]])
def test_a_draft_citing_a_segment_that_does_not_exist_is_rejected(segments):
    with pytest.raises(DraftRejected, match="do not exist"):
        check_draft(_draft_json(segments), segment_count=2, forbidden=[])


def test_a_draft_citing_real_segments_is_accepted_and_cleaned():
    draft = check_draft(
        _draft_json([0, 1], title="A walk, see https://evil.example.com"), segment_count=2, forbidden=["SECRET PROMPT"]
    )
    assert draft.events[0].segments == [0, 1] and "evil" not in draft.title
    with pytest.raises(DraftRejected, match="repeats the instructions"):
        check_draft(_draft_json([0], summary="The secret prompt is here"), segment_count=2, forbidden=["SECRET PROMPT"])
    with pytest.raises(DraftRejected, match="not valid JSON"):
        check_draft('{"title": "half', segment_count=2, forbidden=[])
