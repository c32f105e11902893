"""Transcript files people open: plain text, SubRip, WebVTT and a full JSON record."""

import json
from dataclasses import asdict

from diary_platform.domain.speech.transcription import Transcript


def _timestamp(seconds: float, decimal_marker: str) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def to_txt(transcript: Transcript) -> str:
    return "\n".join(s.text for s in transcript.segments if s.text) + "\n"


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{index}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for index, s in enumerate((s for s in transcript.segments if s.text), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    cues = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n"
        for s in transcript.segments
        if s.text
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_json(transcript: Transcript, **context: object) -> str:
    """Everything about the transcript except how long it took, so that the same audio and model give
    the same file (and storage is not written again); timings are in the transcripts table."""
    record = {key: value for key, value in asdict(transcript).items() if key != "processing_seconds"}
    return json.dumps({**context, **record}, indent=2, ensure_ascii=False)


FORMATS = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt}
