"""Speech of many recordings laid out in model windows, and window times mapped back to each recording.

Whisper pads every window to 30 s, so a 10 s recording alone pays for 30 s of encoder work. Here each
recording's speech (the validation step's VAD spans) is cut into chunks of at most a window, and the
chunks are laid end to end in windows with a short silence between them. With `across_recordings`,
one window may hold the speech of several recordings; otherwise a window holds one recording's only,
and the batching across recordings happens a whole window at a time.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Piece:
    """A stretch of one recording's speech inside a window; all in samples."""

    recording: str
    source_start: int
    length: int
    window_start: int

    @property
    def window_end(self) -> int:
        return self.window_start + self.length

    def distance(self, at: float) -> float:
        return 0.0 if self.window_start <= at <= self.window_end else min(abs(at - self.window_start), abs(at - self.window_end))

    def to_source(self, seconds: float) -> float:
        """A time in the window (seconds), clamped into this piece, as a time in its recording."""
        inside = min(max(float(seconds) * SAMPLE_RATE, self.window_start), self.window_end)
        return (self.source_start + inside - self.window_start) / SAMPLE_RATE


@dataclass
class Window:
    pieces: list[Piece] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.pieces[-1].window_end if self.pieces else 0

    @property
    def recordings(self) -> set[str]:
        return {piece.recording for piece in self.pieces}

    def piece_at(self, seconds: float) -> Piece:
        """The piece a time in this window (seconds) falls in; in a gap, the nearest one."""
        at = seconds * SAMPLE_RATE
        return min(self.pieces, key=lambda piece: piece.distance(at))


def speech_chunks(spans: Iterable[tuple[float, float]], max_samples: int) -> Iterator[tuple[int, int]]:
    """(start, end) in samples of each speech span, a span longer than `max_samples` cut into pieces."""
    for start_seconds, end_seconds in spans:
        start, end = round(start_seconds * SAMPLE_RATE), round(end_seconds * SAMPLE_RATE)
        while end - start > max_samples:
            yield start, start + max_samples
            start += max_samples
        if end > start:
            yield start, end


def pack(
    recordings: Iterable[tuple[str, Iterable[tuple[float, float]]]],
    window_samples: int,
    gap_samples: int,
    across_recordings: bool,
) -> Iterator[Window]:
    """Windows of at most `window_samples`, filled in order with each recording's speech chunks.

    Lazy: a window is yielded as soon as it is full, so a four-hour recording never has all its
    windows in memory."""
    window = Window()
    for recording, spans in recordings:
        if window.pieces and not across_recordings:
            yield window
            window = Window()
        for start, end in speech_chunks(spans, window_samples):
            at = window.length + gap_samples if window.pieces else 0
            if at + end - start > window_samples:
                yield window
                window, at = Window(), 0
            window.pieces.append(Piece(recording, start, end - start, at))
    if window.pieces:
        yield window
