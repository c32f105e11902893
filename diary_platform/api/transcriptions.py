"""A transcript in the response formats of OpenAI's `/v1/audio/transcriptions`, so its clients work unchanged."""

from collections.abc import Callable

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
LANGUAGE_NAMES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian", "nl": "dutch", "pt": "portuguese"}


def verbose(transcript: dict, duration: float) -> dict:
    """OpenAI's `verbose_json`: the text, the language by name, the duration and each segment with its scores.
    Token ids are not kept by the platform, so `tokens` is empty; `seek` is the segment's start in centiseconds."""
    segments = transcript.get("segments") or []
    return {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(transcript.get("language") or "", transcript.get("language") or "english"),
        "duration": round(duration, 3),
        "text": transcript.get("text") or "",
        "segments": [
            {
                "id": index,
                "seek": int(segment["start"] * 100),
                "start": segment["start"],
                "end": segment["end"],
                "text": segment["text"],
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": segment.get("avg_logprob") or 0.0,
                "compression_ratio": segment.get("compression_ratio") or 0.0,
                "no_speech_prob": segment.get("no_speech_prob") or 0.0,
            }
            for index, segment in enumerate(segments)
        ],
    }


def rendered(response_format: str, transcript: dict, duration: float, read: Callable[[str], str]) -> dict | str:
    """The body for `response_format`: a JSON object for json and verbose_json, text for the others (the
    subtitles are the files the transcription step stored; `read(uri)` reads one)."""
    if response_format == "verbose_json":
        return verbose(transcript, duration)
    if response_format == "json":
        return {"text": transcript.get("text") or ""}
    if response_format == "text":
        return (transcript.get("text") or "") + "\n"
    return read(transcript[f"{response_format}_uri"])
