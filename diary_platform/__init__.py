"""Spoken-diary platform: voice recordings in, transcripts, diary notes and digests out."""

__version__ = "0.1.0"
