"""The daily digest: one diary entry per user and day, from that day's notes in recording-time order.

The entry is written through the same note writer (the LLM router or the local writer): each note
becomes one numbered line of the input, so the digest cites the recordings it draws on. The list of
the day's recordings is added by the platform itself, so it is complete whatever the model writes.
"""

from datetime import date, datetime, time, timezone

import polars as pl

from diary_platform.domain.notes.note import Note, NoteRequest, NoteWriter
from diary_platform.domain.schemas import DAILY_DIGEST, STATUS_OK, table


def notes_of_day(notes: pl.DataFrame, day: date) -> pl.DataFrame:
    start = datetime.combine(day, time.min, tzinfo=timezone.utc)
    end = datetime.combine(day, time.max, tzinfo=timezone.utc)
    return (
        notes.filter((pl.col("status") == STATUS_OK) & pl.col("recorded_at").is_between(start, end))
        .unique("recording_id", keep="last")
        .sort("recorded_at", "recording_id")
    )


def _digest_request(user: str, day: date, rows: list[dict]) -> NoteRequest:
    midnight = datetime.combine(day, time.min, tzinfo=timezone.utc)
    segments = []
    for row in rows:
        offset = (row["recorded_at"] - midnight).total_seconds()
        text = f"{row['recorded_at']:%H:%M} {row['title']}. {row['summary']}"
        segments.append({"start": offset, "end": offset + 1.0, "text": text})
    return NoteRequest(
        recording_id=f"digest-{user}-{day.isoformat()}",
        user=user,
        recorded_at=midnight,
        transcript=" ".join(s["text"] for s in segments),
        segments=segments,
    )


def _markdown(note: Note, day: date, rows: list[dict]) -> str:
    recordings = [f"- {row['recorded_at']:%H:%M} — {row['title']} (`{row['recording_id']}`)" for row in rows]
    body = note.to_markdown(datetime.combine(day, time.min, tzinfo=timezone.utc))
    return f"{body}\n## Recordings of the day\n" + "\n".join(recordings) + "\n"


def write_digests(notes: pl.DataFrame, day: date, writer: NoteWriter) -> pl.DataFrame:
    """One row per user who recorded something on `day` (`notes`: any batches' notes, or none at all)."""
    if notes.is_empty():
        return table(DAILY_DIGEST, [])
    day_notes = notes_of_day(notes, day)
    digests = []
    for user in sorted(day_notes["user"].unique().to_list()):
        rows = day_notes.filter(pl.col("user") == user).to_dicts()
        note = writer.write(_digest_request(user, day, rows))
        digests.append(
            {
                "user": user,
                "day": day,
                "recording_ids": [row["recording_id"] for row in rows],
                "title": note.title,
                "summary": note.summary,
                "markdown": _markdown(note, day, rows),
                "provider": note.provider,
                "model": note.model,
                "fallback_path": note.fallback_path,
                "input_tokens": note.input_tokens,
                "output_tokens": note.output_tokens,
                "cost_usd": note.cost_usd,
            }
        )
    return table(DAILY_DIGEST, digests)
