"""A recording's status document, as the API and its webhooks give it, read from what the platform keeps.

The upload's content hash leads to the batch that claimed it (the claims), and the batch's stored tables
to the recording's rows, newest stage first: no row yet is `queued` (still in the landing area) or
`processing` (in a batch), a note written is `done`, a row quarantined at any stage is `quarantined`
with its reason and message, a note waiting in a provider batch is `processing` at stage `notes`, and a
batch the platform gave up on is `failed` until its recordings are quarantined.
"""

from collections.abc import Callable

import polars as pl

from diary_platform.domain.catalog import BATCH_TABLES, DIARY_NOTES, RAW_AUDIO, TRANSCRIPTS, VALIDATED_AUDIO, Catalog
from diary_platform.domain.ingest.api_uploads import ApiUpload
from diary_platform.domain.ingest.batches import BatchStore
from diary_platform.domain.ingest.claims import Claims
from diary_platform.domain.schemas import STATUS_OK, STATUS_PENDING, STATUS_QUARANTINED

FINAL = ("done", "quarantined")
STAGES = {RAW_AUDIO: "ingest", VALIDATED_AUDIO: "validation", TRANSCRIPTS: "transcription", DIARY_NOTES: "notes"}
FILES = {"txt": "txt_uri", "srt": "srt_uri", "vtt": "vtt_uri", "json": "json_uri"}
NOTE_FIELDS = ("title", "summary", "markdown", "mood", "events", "people", "places", "todos", "provider", "model", "template")


class Documents:
    """Status documents over the claims, the batches and the catalog; `link(id, name)` makes a file's URL."""

    def __init__(self, claims: Claims, batches: BatchStore, catalog: Catalog, link: Callable[[str, str], str]):
        self.claims = claims
        self.batches = batches
        self.catalog = catalog
        self.link = link
        self._tables: dict[tuple[str, str], pl.DataFrame | None] = {}

    def rows(self, upload: ApiUpload) -> tuple[str | None, dict[str, dict]]:
        """The batch holding the upload's content, and the recording's row in each of its stored tables."""
        key = self.claims.content_batch(upload.content_sha256)
        if key is None:
            return None, {}
        found = {}
        for name in BATCH_TABLES:
            table = self._table(name, key)
            if table is not None:
                match = table.filter(pl.col("recording_id") == upload.recording_id)
                if match.height:
                    found[name] = match.row(0, named=True)
        return key, found

    def _table(self, name: str, key: str) -> pl.DataFrame | None:
        if (name, key) not in self._tables:
            self._tables[(name, key)] = self.catalog.batch(name, key) if self.catalog.has(name, key) else None
        return self._tables[(name, key)]

    def document(self, upload: ApiUpload) -> dict:
        key, rows = self.rows(upload)
        status, stage, reason, message = _status(key, rows, self.batches.gave_up(key) if key else None)
        validated, transcript, note = rows.get(VALIDATED_AUDIO, {}), rows.get(TRANSCRIPTS), rows.get(DIARY_NOTES)
        transcribed = transcript is not None and transcript["status"] == STATUS_OK
        written = note is not None and note["status"] == STATUS_OK
        links = {kind: self.link(upload.recording_id, f"transcript.{kind}") for kind, column in FILES.items() if transcribed and transcript.get(column)}
        if written and note.get("note_uri"):
            links["note"] = self.link(upload.recording_id, "note.md")
        return {
            "id": upload.recording_id,
            "status": status,
            "stage": stage,
            "file": upload.file,
            "priority": upload.priority,
            "created_at": upload.created_at.isoformat(),
            "batch": key,
            "audio_seconds": validated.get("duration_seconds"),
            "reason": reason,
            "message": message,
            "transcript": {"text": transcript["text"], "segments": transcript["segments"], "language": transcript["language"]} if transcribed else None,
            "note": {name: note.get(name) for name in NOTE_FIELDS} if written else None,
            "links": links,
        }


def _status(key: str | None, rows: dict[str, dict], gave_up: dict | None) -> tuple[str, str, str | None, str | None]:
    """(status, stage, reason, message) from the recording's rows, newest stage first."""
    if key is None:
        return "queued", "landing", None, None
    for name in reversed(BATCH_TABLES):
        row = rows.get(name)
        if row is None:
            continue
        if row["status"] == STATUS_QUARANTINED:
            return "quarantined", STAGES[name], row["reason"], row["message"]
        if row["status"] == STATUS_PENDING:
            return "processing", STAGES[name], None, row["message"]
        if name == DIARY_NOTES:
            return "done", "notes", None, None
        following = BATCH_TABLES[BATCH_TABLES.index(name) + 1]
        if gave_up:
            return "failed", STAGES[following], "gave_up", gave_up.get("last_error")
        return "processing", STAGES[following], None, None
    if gave_up:
        return "failed", "ingest", "gave_up", gave_up.get("last_error")
    return "processing", "ingest", None, None
