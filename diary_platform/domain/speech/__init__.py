"""Speech to text: faster-whisper, the guards against invented text, and the transcript files.

- transcription.py: `TranscriberConfig`, `Transcriber` (one model per process, a batch at a time), `code_version`.
- packing.py: speech of many recordings laid out in model windows, and window times mapped back.
- policy.py: which settings a recording gets, by its priority tag and duration; which batches a change makes stale.
- guards.py: `GuardConfig`, `apply_guards` (compression ratio, silence, repetition loops).
- subtitles.py: `.txt`, `.srt`, `.vtt` and `.json` renderings of a transcript.
"""
