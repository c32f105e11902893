"""One function per stage: a batch table in, the next batch table out, one row per recording.

A recording that fails a stage keeps its row with status `quarantined`, a reason code and a
message; later stages pass such rows through untouched, so every table lists every recording.
"""

import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from diary_platform.domain.audio import decode as audio
from diary_platform.domain.speech import subtitles
from diary_platform.domain.ingest.batches import BatchManifest
from diary_platform.domain.speech.guards import GuardConfig, apply_guards
from diary_platform.domain.store.hashing import recording_id_for
from diary_platform.domain import instruments
from diary_platform.domain.instruments import recording_attributes
from diary_platform.domain.notes.note import Note, NoteRequest, NoteWriter
from diary_platform.domain.schemas import (
    DIARY_NOTES,
    IDENTITY_COLUMNS,
    RAW_AUDIO,
    SEGMENT,
    STATUS_OK,
    STATUS_QUARANTINED,
    TRANSCRIPTS,
    VALIDATED_AUDIO,
    blank_row,
    table,
)
from diary_platform.domain.store.layout import ContentChanged, DataStore
from diary_platform.domain.audio.sandbox import DecodeResult, SandboxPool
from diary_platform.domain.speech.transcription import Transcriber, Transcript

def _identity(row: dict) -> dict:
    return {column: row[column] for column in IDENTITY_COLUMNS}


def _quarantine(row: dict, reason: str, message: str) -> dict:
    return {**_identity(row), "status": STATUS_QUARANTINED, "reason": reason, "message": message}


def ingest(manifest: BatchManifest, store: DataStore) -> pl.DataFrame:
    """Copy each upload into content-addressed storage, checking it still has the content the sensor hashed."""
    rows = []
    for item in manifest.items:
        source = Path(item.source_path)
        row = {
            "recording_id": recording_id_for(item.content_sha256),
            "content_sha256": item.content_sha256,
            "batch_key": manifest.key,
            "user": item.user,
            "recorded_at": datetime.fromtimestamp(item.mtime_ns / 1e9, tz=timezone.utc),
            "status": STATUS_OK,
            "reason": None,
            "message": None,
            "source_path": item.source_path,
            "source_name": source.name,
            "original_uri": None,
            "size_bytes": item.size,
        }
        with instruments.current().tracer.start_as_current_span("ingest", attributes=recording_attributes(row)) as span:
            row = _copy_original(row, source, item.content_sha256, store)
            span.set_attribute("diary.status", row["status"])
        instruments.current().recordings.add(1, {"stage": "ingest", "status": row["status"]})
        rows.append(row)
    return table(RAW_AUDIO, rows)


def _copy_original(row: dict, source: Path, content_sha256: str, store: DataStore) -> dict:
    try:
        stored = store.store_original(source, content_sha256)
    except FileNotFoundError as error:
        return {**row, **_quarantine(row, "source_missing", str(error))}
    except ContentChanged:
        message = f"The upload {source} changed after it was picked up; it will be taken again as new content."
        return {**row, **_quarantine(row, "source_changed", message)}
    return {**row, "original_uri": stored.uri}


def validate(raw: pl.DataFrame, store: DataStore, sandboxes: SandboxPool) -> pl.DataFrame:
    """Decode each original once, in the sandbox, into normalised 16 kHz audio, and measure it.

    What cannot be decoded, or breaks a limit, is quarantined with its reason; the original stays.
    """
    rows = raw.to_dicts()
    todo = [row for row in rows if row["status"] == STATUS_OK]
    objects = store.objects
    with ExitStack() as files:
        jobs = [
            (
                files.enter_context(objects.local_file(objects.key(r["original_uri"]))),
                files.enter_context(objects.output_file(store.normalised_key(r["content_sha256"]), content_addressed=True)),
            )
            for r in todo
        ]
        decoded = sandboxes.decode_all(jobs)
    normalised_uris = {r["recording_id"]: objects.uri(store.normalised_key(r["content_sha256"])) for r in todo}
    outcomes = dict(zip((r["recording_id"] for r in todo), decoded, strict=True))
    validated = []
    for row in rows:
        out = {**blank_row(VALIDATED_AUDIO), **_identity(row), "original_uri": row["original_uri"]}
        if row["recording_id"] in outcomes:
            outcome, started_ns, ended_ns = outcomes[row["recording_id"]]
            decode_span = instruments.current().tracer.start_span("decode", start_time=started_ns, attributes=recording_attributes(row))
            decode_span.end(end_time=ended_ns)
            out["decode_seconds"] = (ended_ns - started_ns) / 1e9
            with instruments.current().tracer.start_as_current_span("validate", attributes=recording_attributes(row)) as span:
                if isinstance(outcome, audio.AudioRejected):
                    out.update(_quarantine(row, outcome.reason, outcome.message))
                else:
                    out.update(_decoded_columns(outcome, normalised_uris[row["recording_id"]]))
                span.set_attributes({"diary.status": out["status"], "diary.audio_seconds": out["duration_seconds"] or 0.0})
                if out["reason"]:
                    span.set_attribute("diary.reason", out["reason"])
            instruments.current().recordings.add(1, {"stage": "validate", "status": out["status"]})
        validated.append(out)
    return table(VALIDATED_AUDIO, validated)


def _decoded_columns(decoded: DecodeResult, normalised_uri: str) -> dict:
    info = decoded.info
    columns = {
        "normalised_uri": normalised_uri,
        "container": info.container,
        "codec": info.codec,
        "sample_rate": info.source_sample_rate,
        "channels": info.channels,
        "bitrate": info.bitrate,
        "declared_seconds": info.declared_seconds,
        "duration_seconds": info.decoded_seconds,
        "partial": info.partial,
        **asdict(decoded.measurements),
    }
    if info.partial:
        columns["message"] = (
            f"Partial: decoded {info.decoded_seconds:.1f} s of the "
            f"{info.declared_seconds or 0:.1f} s the file declares; kept and transcribed."
        )
    return columns


def transcribe(
    validated: pl.DataFrame, transcriber: Transcriber, guards: GuardConfig, store: DataStore
) -> pl.DataFrame:
    """Transcribe the batch with one loaded model, drop what the guards catch, write the transcript files.

    Audio in which the VAD heard no speech is not shown to the model at all: silence and noise are
    where Whisper models invent sentences.
    """
    rows = []
    for row in validated.iter_rows(named=True):
        out = {
            **blank_row(TRANSCRIPTS),
            **_identity(row),
            "model": transcriber.model_identity,
            "compute_type": transcriber.config.compute_type,
            "audio_seconds": row["duration_seconds"] or 0.0,
        }
        if row["status"] != STATUS_OK:
            rows.append(out)
            continue
        with instruments.current().tracer.start_as_current_span("transcribe", attributes=recording_attributes(row)) as span:
            if not row["speech_ratio"]:
                result = Transcript("", "", 0.0, [], row["duration_seconds"], 0.0)
            else:
                with store.objects.local_file(store.objects.key(row["normalised_uri"])) as wav:
                    result = transcriber.transcribe(audio.read_wav(wav))
            span.set_attributes(
                {"diary.audio_seconds": result.audio_seconds, "diary.model": transcriber.model_identity,
                 "diary.processing_seconds": result.processing_seconds}
            )
        instruments.current().audio_seconds.add(result.audio_seconds, {"model": transcriber.model_identity})
        instruments.current().recordings.add(1, {"stage": "transcribe", "status": STATUS_OK})
        if result.processing_seconds > 0:
            instruments.current().transcription_speed.record(result.audio_seconds / result.processing_seconds, {"model": transcriber.model_identity})
        kept, dropped = apply_guards(result.segments, guards)
        result = replace(result, segments=kept, text=" ".join(s.text for s in kept if s.text).strip())
        uris = {}
        for extension, render in subtitles.FORMATS.items():
            uris[f"{extension}_uri"] = store.write_text(store.transcript_key(row["recording_id"], extension), render(result)).uri
        json_written = store.write_text(
            store.transcript_key(row["recording_id"], "json"),
            subtitles.to_json(
                result,
                recording_id=row["recording_id"],
                model=transcriber.model_identity,
                dropped_segments=[asdict(d) for d in dropped],
            ),
        )
        out.update(
            text=result.text,
            language=result.language or None,
            language_probability=result.language_probability if result.language else None,
            segments=[{name: getattr(s, name) for name in SEGMENT.to_schema()} for s in kept],
            dropped_segments=[asdict(d) for d in dropped],
            avg_logprob=sum(s.avg_logprob for s in kept) / len(kept) if kept else None,
            audio_seconds=result.audio_seconds,
            processing_seconds=result.processing_seconds,
            json_uri=json_written.uri,
            **uris,
        )
        rows.append(out)
    return table(TRANSCRIPTS, rows)


def write_notes(transcripts: pl.DataFrame, writer: NoteWriter, store: DataStore) -> pl.DataFrame:
    rows = []
    for row in transcripts.iter_rows(named=True):
        out = {**blank_row(DIARY_NOTES), **_identity(row)}
        if row["status"] != STATUS_OK:
            rows.append(out)
            continue
        request = NoteRequest(
            recording_id=row["recording_id"],
            user=row["user"],
            recorded_at=row["recorded_at"],
            transcript=row["text"] or "",
            segments=row["segments"],
        )
        started = time.perf_counter()
        with instruments.current().tracer.start_as_current_span("write_note", attributes=recording_attributes(row)) as span:
            note = writer.write(request)
            span.set_attributes(
                {"diary.provider": note.provider, "diary.model": note.model, "diary.input_tokens": note.input_tokens,
                 "diary.output_tokens": note.output_tokens, "diary.cost_usd": note.cost_usd}
            )
        _count_note(note)
        markdown = note.to_markdown(row["recorded_at"])
        written = store.write_text(store.note_key(row["recording_id"]), markdown)
        out.update(
            title=note.title,
            summary=note.summary,
            events=note.events,
            people=note.people,
            places=note.places,
            todos=note.todos,
            mood=note.mood,
            markdown=markdown,
            note_uri=written.uri,
            provider=note.provider,
            model=note.model,
            template=note.template,
            fallback_path=note.fallback_path,
            attempts=note.attempts,
            citations=note.citations,
            remarks=note.remarks,
            input_tokens=note.input_tokens,
            output_tokens=note.output_tokens,
            cost_usd=note.cost_usd,
            latency_seconds=note.latency_seconds or time.perf_counter() - started,
        )
        rows.append(out)
    return table(DIARY_NOTES, rows)



def _count_note(note: Note) -> None:
    labels = {"provider": note.provider, "model": note.model}
    instruments.current().recordings.add(1, {"stage": "write_note", "status": STATUS_OK})
    instruments.current().llm_tokens.add(note.input_tokens, {**labels, "direction": "input"})
    instruments.current().llm_tokens.add(note.output_tokens, {**labels, "direction": "output"})
    instruments.current().llm_cost.add(note.cost_usd, labels)
    if len(note.fallback_path) > 1:
        instruments.current().llm_fallbacks.add(1, labels)
