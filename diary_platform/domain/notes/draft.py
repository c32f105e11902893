"""The structured note a language model must return, and the checks it must pass before it is used.

Every item cites the transcript segments it came from; citations must name real segments. Text that
a model could be tricked into emitting (links, images, the system prompt) never reaches a note.
"""

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

MOODS = ("positive", "negative", "mixed", "neutral")
_URL = re.compile(r"(https?://|www\.)\S+|\b[\w-]+\.(com|org|net|io|ai|ly|co)(/\S*)?\b", re.IGNORECASE)
_MARKDOWN_IMAGE_OR_LINK = re.compile(r"!?\[[^\]]*\]\([^)]*\)")


class Cited(BaseModel):
    text: str = Field(min_length=1, max_length=500)
    segments: list[int] = Field(min_length=1, max_length=20)


class Mood(BaseModel):
    label: Literal[MOODS]
    segments: list[int] = Field(default_factory=list, max_length=20)


class NoteDraft(BaseModel):
    title: str = Field(min_length=1, max_length=120)
    summary: str = Field(min_length=1, max_length=1500)
    events: list[Cited] = Field(max_length=50)
    people: list[Cited] = Field(max_length=50)
    places: list[Cited] = Field(max_length=50)
    todos: list[Cited] = Field(max_length=50)
    mood: Mood

    @field_validator("title", "summary")
    @classmethod
    def _no_links(cls, value: str) -> str:
        return _clean(value)


class DraftRejected(ValueError):
    """The model's output is not a usable note; the message is fed back for one repair attempt."""


def json_schema() -> dict:
    return NoteDraft.model_json_schema()


def _clean(text: str) -> str:
    return _URL.sub("", _MARKDOWN_IMAGE_OR_LINK.sub("", text)).strip()


def check_draft(raw: str, segment_count: int, forbidden: list[str]) -> NoteDraft:
    """Parse and validate; strip links; refuse citations of unknown segments and leaked instructions."""
    try:
        draft = NoteDraft.model_validate_json(raw)
    except ValueError as error:
        raise DraftRejected(f"The output is not valid JSON for the schema: {error}") from error
    for group in (draft.events, draft.people, draft.places, draft.todos):
        for item in group:
            item.text = _clean(item.text)
            unknown = [s for s in item.segments if not 0 <= s < segment_count]
            if unknown:
                raise DraftRejected(f"Item {item.text!r} cites segments {unknown} that do not exist.")
    every_text = " ".join([draft.title, draft.summary, *(i.text for g in (draft.events, draft.people, draft.places, draft.todos) for i in g)])
    for secret in forbidden:
        if secret and secret.lower() in every_text.lower():
            raise DraftRejected("The output repeats the instructions instead of describing the recording.")
    draft.events = [i for i in draft.events if i.text]
    draft.people = [i for i in draft.people if i.text]
    draft.places = [i for i in draft.places if i.text]
    draft.todos = [i for i in draft.todos if i.text]
    return draft
