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
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march",
    "april", "may", "june", "july", "august", "september", "october", "november", "december", "today", "tomorrow",
    "yesterday", "tonight", "ok", "okay", "mr", "mrs", "ms", "dr",
}
# English closed-class words (pronouns, determiners, conjunctions, prepositions, auxiliaries) and the words
# speech opens sentences with: capitalised, they are a sentence start a transcript lost, never a name.
_FUNCTION_WORDS = set(
    """i i'm i've i'll i'd me my mine myself we we're we've we'll us our ours you you're you've you'll your yours
    he he's him his she she's her hers it it's its they they're they've them their theirs this that these those
    there there's here what which who whom whose when where why how a an the and but or nor so yet for because
    although though if unless until while whereas since as than then also too either neither both each every all
    some any no none not one another other such only just even still already again ever never always often
    sometimes maybe perhaps anyway anyhow however therefore besides meanwhile otherwise instead
    am is are was were be been being do does did done have has had having will would shall should can could may
    might must ought let let's don't doesn't didn't can't couldn't won't wouldn't isn't aren't wasn't weren't
    haven't hasn't hadn't shouldn't
    in on at to from by with without of off about above below over under into onto upon after before during
    through across around near between among against toward towards within beyond behind beside along up down out
    yes yeah yep no nope oh ah um uh hmm well now right sure hello hi hey thanks thank please sorry wow
    first second next last finally later soon afterwards today's dear""".split()
)
_KIN = {"grandma", "grandpa", "granny", "mum", "mom", "dad", "mother", "father", "auntie", "uncle"}
_TITLE_WORDS = 8


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _is_todo(sentence: str) -> bool:
    return bool(_TODO_CUES.search(sentence) or _IMPERATIVE_START.match(sentence))


_WORD = re.compile(r"[\w'’-]+")


def _lower_case_words(text: str) -> set[str]:
    """Words the transcript writes in lower case somewhere: common words, so never names when capitalised."""
    return {word for word in _WORD.findall(text) if word.islower()}


def _proper_nouns(sentence: str, common: set[str]) -> list[tuple[str, str]]:
    """(name, preceding word) for runs of capitalised words past the sentence start that are neither function
    words nor written in lower case elsewhere in the transcript (a common word capitalised by a lost sentence
    break: "… home But it was late")."""
    words = _WORD.findall(sentence)
    found: list[tuple[str, str]] = []
    run: list[str] = []
    before = ""
    for index, word in enumerate(words):
        lower = word.lower()
        capital = index > 0 and word[0].isupper() and not ({lower} & _NOT_NAMES or {lower} & _FUNCTION_WORDS or lower in common)
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
        common = _lower_case_words(request.transcript)
        for sentence in sentences:
            for name, before in _proper_nouns(sentence, common):
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
