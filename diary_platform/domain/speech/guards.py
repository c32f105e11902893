"""Transcript guards: segments a Whisper model is known to invent are dropped from the text and listed.

- `compression_ratio`: text that gzip squeezes too well is a repetition loop (Whisper's own rule, 2.4).
- `silence`: a segment the model thinks is probably not speech and is unsure of (no-speech probability
  above 0.6 and average log-probability below -1.0: Whisper's rule for skipping silent windows).
- `repetition_loop`: the same short phrase repeated more than `max_phrase_repeats` times in a row.
- `repeated_segment`: a segment whose text repeats the previous segment's (a decoder stuck in a loop).
"""

import re
from dataclasses import dataclass

from diary_platform.domain.speech.transcription import Segment


@dataclass(frozen=True)
class GuardConfig:
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    max_phrase_repeats: int = 3
    max_phrase_words: int = 6


@dataclass(frozen=True)
class DroppedSegment:
    start: float
    end: float
    text: str
    guard: str


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def has_repetition_loop(text: str, max_repeats: int, max_phrase_words: int) -> bool:
    """True when some phrase of 1..max_phrase_words words occurs more than max_repeats times back to back."""
    words = _words(text)
    for size in range(1, max_phrase_words + 1):
        for start in range(len(words) - size * (max_repeats + 1) + 1):
            phrase = words[start : start + size]
            repeats = 1
            position = start + size
            while words[position : position + size] == phrase:
                repeats += 1
                position += size
                if repeats > max_repeats:
                    return True
    return False


def apply_guards(segments: list[Segment], config: GuardConfig) -> tuple[list[Segment], list[DroppedSegment]]:
    kept: list[Segment] = []
    dropped: list[DroppedSegment] = []
    previous = None
    for segment in segments:
        guard = None
        if segment.compression_ratio > config.compression_ratio_threshold:
            guard = "compression_ratio"
        elif segment.no_speech_prob > config.no_speech_threshold and segment.avg_logprob < config.log_prob_threshold:
            guard = "silence"
        elif has_repetition_loop(segment.text, config.max_phrase_repeats, config.max_phrase_words):
            guard = "repetition_loop"
        elif previous is not None and _words(segment.text) and _words(segment.text) == previous:
            guard = "repeated_segment"
        if guard:
            dropped.append(DroppedSegment(segment.start, segment.end, segment.text, guard))
        else:
            kept.append(segment)
        previous = _words(segment.text)
    return kept, dropped
