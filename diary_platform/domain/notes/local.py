"""The local note writer: extractive and rule-based, it needs no network and never fails.

It is the last resort of the LLM router and the default when no provider is configured.
"""

import re

from diary_platform.domain.notes.note import Note, NoteRequest

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TODO_CUES = re.compile(
    r"\b(need to|needs to|have to|has to|must|should|remember to|don't forget|do not forget|"
    r"i will|i'll|going to|tomorrow|todo|to do)\b",
    re.IGNORECASE,
)
_IMPERATIVE_START = re.compile(
    r"^(buy|pay|send|call|book|email|write|finish|pick up|remember|ask|check|clean|bring|get)\b",
    re.IGNORECASE,
)
_MOOD_WORDS = {
    "positive": {
        "happy", "glad", "great", "delicious", "better", "excited", "relaxed", "fun", "lovely",
        "celebrated", "enjoyed", "proud", "calm", "good", "wonderful", "blooming",
    },
    "negative": {
        "tired", "anxious", "worried", "sad", "stressed", "angry", "upset", "delayed", "skipped",
        "afraid", "lonely", "frustrated", "sick", "bad", "warned",
    },
}
_PLACE_PREPOSITIONS = {"in", "at", "to", "from", "near", "around", "through", "into"}
_PLACE_NOUNS = {
    "market", "library", "restaurant", "office", "park", "gym", "kitchen", "garden", "river",
    "harbour", "harbor", "station", "school", "university", "hospital", "church", "beach",
    "cafe", "café", "shop", "supermarket", "home", "airport", "museum", "bank", "dentist",
}
_NOT_NAMES = {
    "i", "i'm", "i've", "i'll", "i'd", "monday", "tuesday", "wednesday", "thursday", "friday",
    "saturday", "sunday", "january", "february", "march", "april", "may", "june", "july",
    "august", "september", "october", "november", "december", "today", "tomorrow", "yesterday",
    "ok", "okay", "mr", "mrs", "ms", "dr",
}
_KIN = {"grandma", "grandpa", "granny", "mum", "mom", "dad", "mother", "father", "auntie", "uncle"}
_TITLE_WORDS = 8


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _is_todo(sentence: str) -> bool:
    return bool(_TODO_CUES.search(sentence) or _IMPERATIVE_START.match(sentence))


def _proper_nouns(sentence: str) -> list[tuple[str, str]]:
    """(name, preceding word) for capitalised words past the sentence start, joined into runs."""
    words = re.findall(r"[\w'’-]+", sentence)
    found: list[tuple[str, str]] = []
    run: list[str] = []
    before = ""
    for index, word in enumerate(words):
        capital = word[0].isupper() and index > 0 and word.lower() not in _NOT_NAMES
        if capital:
            if not run:
                before = words[index - 1].lower()
            run.append(word)
        elif run:
            found.append((" ".join(run), before))
            run = []
    if run:
        found.append((" ".join(run), before))
    return found


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.lower(), item)
    return list(seen.values())


class LocalNoteWriter:
    """Extractive and rule-based: deterministic, instant, offline. Never fails on any transcript."""

    provider = "local"
    model = "extractive-v1"

    def write(self, request: NoteRequest) -> Note:
        sentences = _sentences(request.transcript)
        if not sentences:
            return Note(
                title="No speech recorded",
                summary="The recording holds no speech that could be transcribed.",
                events=[], people=[], places=[], todos=[], mood="unknown",
                provider=self.provider, model=self.model,
            )
        todos = [s.rstrip(".") for s in sentences if _is_todo(s)]
        events = [s for s in sentences if s.rstrip(".") not in todos]
        people: list[str] = []
        places: list[str] = []
        for sentence in sentences:
            for name, before in _proper_nouns(sentence):
                is_place = before in _PLACE_PREPOSITIONS and name.lower() not in _KIN
                (places if is_place else people).append(name)
            for match in re.finditer(r"\bthe (\w+)", sentence, re.IGNORECASE):
                if match.group(1).lower() in _PLACE_NOUNS:
                    places.append(match.group(1).lower())
        return Note(
            title=self._title(sentences[0]),
            summary=" ".join(sentences[:2]),
            events=events,
            people=_unique(people),
            places=_unique(places),
            todos=todos,
            mood=self._mood(request.transcript),
            provider=self.provider,
            model=self.model,
        )

    @staticmethod
    def _title(first_sentence: str) -> str:
        words = first_sentence.rstrip(".!?").split()
        title = " ".join(words[:_TITLE_WORDS])
        return title + ("…" if len(words) > _TITLE_WORDS else "")

    @staticmethod
    def _mood(text: str) -> str:
        words = set(re.findall(r"[a-z']+", text.lower()))
        positive = sorted(words & _MOOD_WORDS["positive"])
        negative = sorted(words & _MOOD_WORDS["negative"])
        if positive and negative:
            label = "mixed"
        elif positive:
            label = "positive"
        elif negative:
            label = "negative"
        else:
            return "neutral"
        return f"{label} ({', '.join(positive + negative)})"
