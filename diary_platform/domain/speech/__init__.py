"""Speech to text: faster-whisper, the guards against invented text, and the transcript files.

- transcription.py: `TranscriberConfig`, `Transcriber` (one model per process), `code_version`.
- guards.py: `GuardConfig`, `apply_guards` (compression ratio, silence, repetition loops).
- subtitles.py: `.txt`, `.srt`, `.vtt` and `.json` renderings of a transcript.
"""
