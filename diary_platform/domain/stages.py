"""One function per stage: a batch table in, the next batch table out, one row per recording.

A recording that fails a stage keeps its row with status `quarantined`, a reason code and a
message; later stages pass such rows through untouched, so every table lists every recording.
Every stage runs its recordings through `_each_recording`: one span and one count per recording.
"""

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import pandera.polars as pa
import polars as pl

from diary_platform.domain import instruments
from diary_platform.domain.audio.decode import AudioRejected
from diary_platform.domain.audio.sandbox import DecodeResult, SandboxPool
from diary_platform.domain.ingest.batches import BatchManifest
from diary_platform.domain.instruments import recording_attributes
from diary_platform.domain.models.assignment import ModelRouting
from diary_platform.domain.notes.note import Note, NoteRequest
from diary_platform.domain.notes.note_batches import COLLECTED, ENDED, NoteBatch
from diary_platform.domain.notes.router import BATCH, NoteRouter, Plan
from diary_platform.domain.schemas import (
    DIARY_NOTES,
    IDENTITY_COLUMNS,
    RAW_AUDIO,
    SEGMENT,
    STATUS_OK,
    STATUS_PENDING,
    STATUS_QUARANTINED,
    TRANSCRIPTS,
    VALIDATED_AUDIO,
    blank_row,
    table,
)
from diary_platform.domain.speech import subtitles
from diary_platform.domain.speech.guards import DroppedSegment, GuardConfig, apply_guards
from diary_platform.domain.speech.policy import TranscriptionPolicy, priority_of
from diary_platform.domain.speech.transcription import Speech, Transcriber, Transcript
from diary_platform.domain.store.hashing import recording_id_for
from diary_platform.domain.store.layout import ContentChanged, DataStore


# At most this much audio is local at once in the transcripts step (two hours: 230 MB of normalised WAV).
GROUP_AUDIO_SECONDS = 7200.0


def _identity(row: dict) -> dict:
    return {column: row.get(column) for column in IDENTITY_COLUMNS}


def _quarantine(reason: str, message: str) -> dict:
    return {"status": STATUS_QUARANTINED, "reason": reason, "message": message}


def _each_recording(
    rows: list[dict],
    schema: pa.DataFrameSchema,
    stage: str,
    work: Callable[[dict], dict],
    always: Callable[[dict], dict] = lambda row: {},
) -> pl.DataFrame:
    """The skeleton every stage shares. Each row keeps its identity and gets the stage's columns: blank for
    a row quarantined earlier, else whatever `work(row)` returns (its results, or a quarantine), inside a
    span and counted by status. `always(row)` adds columns every row carries, whatever its status."""
    meters = instruments.current()
    out = []
    for row in rows:
        columns = {**blank_row(schema), **_identity(row), **always(row)}
        if row["status"] == STATUS_OK:
            with meters.tracer.start_as_current_span(stage, attributes=recording_attributes(row)) as span:
                columns.update(work(row))
                span.set_attribute("diary.status", columns["status"])
                if columns["reason"]:
                    span.set_attribute("diary.reason", columns["reason"])
            meters.recordings.add(1, {"stage": stage, "status": columns["status"]})
        out.append(columns)
    return table(schema, out)


def ingest(manifest: BatchManifest, store: DataStore) -> pl.DataFrame:
    """Copy each upload into content-addressed storage, checking it still has the content the sensor hashed."""
    arrivals = {recording_id_for(item.content_sha256): item for item in manifest.items}
    rows = [
        {
            "recording_id": recording_id,
            "content_sha256": item.content_sha256,
            "batch_key": manifest.key,
            "user": item.user,
            "priority": priority_of(item.relative_path),
            "recorded_at": datetime.fromtimestamp(item.mtime_ns / 1e9, tz=timezone.utc),
            "status": STATUS_OK,
            "reason": None,
            "message": None,
        }
        for recording_id, item in arrivals.items()
    ]

    def copy(row: dict) -> dict:
        item = arrivals[row["recording_id"]]
        return _copy_original(item.source_path, item.content_sha256, store)

    def source(row: dict) -> dict:
        item = arrivals[row["recording_id"]]
        return {"source_path": item.source_path, "source_name": Path(item.relative_path).name, "size_bytes": item.size}

    return _each_recording(rows, RAW_AUDIO, "ingest", copy, always=source)


def _copy_original(source: str, content_sha256: str, store: DataStore) -> dict:
    try:
        stored = store.store_original(source, content_sha256)
    except FileNotFoundError as error:
        return _quarantine("source_missing", str(error))
    except ContentChanged:
        return _quarantine(
            "source_changed", f"The upload {source} changed after it was picked up; it will be taken again as new content."
        )
    return {"original_uri": stored.uri}


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
    outcomes = dict(zip((r["recording_id"] for r in todo), decoded, strict=True))
    tracer = instruments.current().tracer
    for row in todo:  # the decodes ran side by side in the sandbox pool: each gets its span with the times measured
        _, started_ns, ended_ns = outcomes[row["recording_id"]]
        tracer.start_span("decode", start_time=started_ns, attributes=recording_attributes(row)).end(end_time=ended_ns)

    def measure(row: dict) -> dict:
        outcome, started_ns, ended_ns = outcomes[row["recording_id"]]
        columns = {"decode_seconds": (ended_ns - started_ns) / 1e9}
        if isinstance(outcome, AudioRejected):
            return {**columns, **_quarantine(outcome.reason, outcome.message)}
        normalised_uri = objects.uri(store.normalised_key(row["content_sha256"]))
        instruments.current_span().set_attribute("diary.audio_seconds", outcome.info.decoded_seconds)
        return {**columns, **_decoded_columns(outcome, normalised_uri)}

    return _each_recording(rows, VALIDATED_AUDIO, "validate", measure, always=lambda row: {"original_uri": row["original_uri"]})


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
        "speech_spans": [{"start": start, "end": end} for start, end in decoded.measurements.speech_spans],
    }
    if info.partial:
        columns["message"] = (
            f"Partial: decoded {info.decoded_seconds:.1f} s of the "
            f"{info.declared_seconds or 0:.1f} s the file declares; kept and transcribed."
        )
    return columns


def transcribe(
    validated: pl.DataFrame, policy: TranscriptionPolicy, guards: GuardConfig, store: DataStore, routing: ModelRouting | None = None
) -> pl.DataFrame:
    """Transcribe the batch, drop what the guards catch, write the transcript files.

    The model registry (`routing`) gives each recording its model: the baseline, or a candidate for the
    users an experiment assigns to it; the policy's rules then choose its settings (by its priority tag and
    duration) over that model's. The recordings that share settings go through the model together
    (`Transcriber.transcribe_batch`), and only where the validation step's VAD heard speech: silence and
    noise are where Whisper models invent sentences.
    """
    meters = instruments.current()
    rows = validated.to_dicts()
    assigned = {row["recording_id"]: routing.transcription(row["user"]) for row in rows} if routing else {}
    choices = {
        row["recording_id"]: (policy.on(assigned[row["recording_id"]][1]) if routing else policy).choose(
            row.get("priority"), row["duration_seconds"] or 0.0
        )
        for row in rows
    }
    heard = [row for row in rows if row["status"] == STATUS_OK and row["speech_ratio"]]
    results: dict[str, Transcript] = {}
    models: dict[str, str] = {}
    for choice in {choices[row["recording_id"]] for row in heard}:
        transcriber = Transcriber(choice.config)
        for group in audio_groups([row for row in heard if choices[row["recording_id"]] == choice], GROUP_AUDIO_SECONDS):
            models.update(dict.fromkeys((row["recording_id"] for row in group), transcriber.model_identity))
            span = {"diary.recordings": len(group), "diary.model": transcriber.model_identity, "diary.policy_rule": choice.rule}
            with ExitStack() as files, meters.tracer.start_as_current_span("transcribe_batch", attributes=span):
                results |= transcriber.transcribe_batch(
                    Speech(
                        key=row["recording_id"],
                        wav=files.enter_context(store.objects.local_file(store.objects.key(row["normalised_uri"]))),
                        spans=None if row["speech_spans"] is None else [(s["start"], s["end"]) for s in row["speech_spans"]],
                        seconds=row["duration_seconds"],
                    )
                    for row in group
                )

    def run_model(row: dict) -> dict:
        model = models.get(row["recording_id"], "")
        result = results.get(row["recording_id"]) or Transcript("", "", 0.0, [], row["duration_seconds"], 0.0)
        instruments.current_span().set_attributes(
            {"diary.audio_seconds": result.audio_seconds, "diary.model": model, "diary.processing_seconds": result.processing_seconds}
        )
        meters.audio_seconds.add(result.audio_seconds, {"model": model})
        if result.processing_seconds > 0:
            meters.transcription_speed.record(result.audio_seconds / result.processing_seconds, {"model": model})
        kept, dropped = apply_guards(result.segments, guards)
        result = replace(result, segments=kept, text=" ".join(s.text for s in kept if s.text).strip())
        return _transcript_columns(result, dropped, _write_transcript_files(store, row["recording_id"], result, dropped, model))

    def chosen(row: dict) -> dict:
        choice = choices[row["recording_id"]]
        assignment = assigned[row["recording_id"]][0] if routing else None
        return {
            "model": models.get(row["recording_id"]) or choice.config.model,
            "compute_type": choice.config.compute_type,
            "policy_rule": choice.rule,
            "transcriber_version": choice.version,
            "model_version": assignment.model_id if assignment else None,
            "arm": assignment.arm if assignment else None,
            "experiment": assignment.experiment if assignment else None,
            "audio_seconds": row["duration_seconds"] or 0.0,
        }

    return _each_recording(rows, TRANSCRIPTS, "transcribe", run_model, always=chosen)


def audio_groups(rows: list[dict], max_seconds: float) -> list[list[dict]]:
    """Rows in order, in groups of at most `max_seconds` of audio (a longer recording alone in its group).

    The normalised WAVs of a group are local files at once (downloaded, with a bucket store), so a
    group bounds the scratch disk a batch of long recordings needs; a group still fills the model's
    batches many times over."""
    groups: list[list[dict]] = []
    seconds = 0.0
    for row in rows:
        if not groups or seconds + row["duration_seconds"] > max_seconds:
            groups.append([])
            seconds = 0.0
        groups[-1].append(row)
        seconds += row["duration_seconds"]
    return groups


def _write_transcript_files(
    store: DataStore, recording_id: str, result: Transcript, dropped: list[DroppedSegment], model: str
) -> dict[str, str]:
    uris = {
        f"{extension}_uri": store.write_text(store.transcript_key(recording_id, extension), render(result)).uri
        for extension, render in subtitles.FORMATS.items()
    }
    record = subtitles.to_json(result, recording_id=recording_id, model=model, dropped_segments=[asdict(d) for d in dropped])
    uris["json_uri"] = store.write_text(store.transcript_key(recording_id, "json"), record).uri
    return uris


def _transcript_columns(result: Transcript, dropped: list[DroppedSegment], uris: dict[str, str]) -> dict:
    kept = result.segments
    return {
        "text": result.text,
        "language": result.language or None,
        "language_probability": result.language_probability if result.language else None,
        "segments": [{name: getattr(s, name) for name in SEGMENT.to_schema()} for s in kept],
        "dropped_segments": [asdict(d) for d in dropped],
        "avg_logprob": sum(s.avg_logprob for s in kept) / len(kept) if kept else None,
        "audio_seconds": result.audio_seconds,
        "processing_seconds": result.processing_seconds,
        **uris,
    }


def write_notes(
    transcripts: pl.DataFrame,
    router: NoteRouter,
    store: DataStore,
    previous: pl.DataFrame | None = None,
    now: datetime | None = None,
    template_of: Callable[[dict], str | None] = lambda row: None,
    routing: ModelRouting | None = None,
) -> pl.DataFrame:
    """A note per transcribed recording. A note that may wait goes into one provider batch per (provider,
    model) and its row is `pending` with the batch's record id; a batch that has ended is collected here.
    `previous`: the stored table when collecting, whose written notes are kept as they are (never written
    twice) and whose pending rows are collected from the batch they wait for. `template_of(row)`: the note
    template asked for with the recording's upload, if any. `routing`: the model registry's A/B arm of each
    user (a candidate-arm note is tried on the experiment's model first)."""
    now = now or datetime.now(timezone.utc)
    rows = transcripts.to_dicts()
    arms = {row["user"]: routing.notes_model(row["user"]) for row in rows} if routing else {}
    requests = {
        row["recording_id"]: _note_request(row, template_of(row), arms[row["user"]][1] if routing else None)
        for row in rows if row["status"] == STATUS_OK
    }
    kept, waiting_for = _earlier_notes(previous, requests)
    found = {batch_id: router.state.note_batches.get(batch_id) for batch_id in set(waiting_for.values())}
    waiting = {recording_id: found[batch_id] for recording_id, batch_id in waiting_for.items() if found[batch_id] is not None}
    groups: dict[tuple[str, str], list[NoteRequest]] = {}
    for recording_id, request in requests.items():
        target = None if recording_id in kept or recording_id in waiting else router.waits_for(request)
        if target is not None:
            groups.setdefault(target, []).append(request)
    records: dict[str, NoteBatch] = {record.id: record for record in waiting.values()}
    for (provider, model), members in groups.items():
        record = router.submit(rows[0]["batch_key"], provider, model, members, now)
        if record is not None:
            records[record.id] = record
            waiting.update({request.recording_id: record for request in members})
    collected: dict[str, Note] = {}
    for record in records.values():
        if record.status in (ENDED, COLLECTED):
            members = [requests[i] for i, r in waiting.items() if r.id == record.id]
            collected.update(router.collect(record, members))

    def write(row: dict) -> dict:
        recording_id = row["recording_id"]
        if recording_id in kept:
            return kept[recording_id]
        if recording_id in waiting and recording_id not in collected:
            return _pending_columns(waiting[recording_id], router.plan(requests[recording_id]))
        started = time.perf_counter()
        note = collected.get(recording_id) or router.write(requests[recording_id])
        _count_note(note)
        markdown = note.to_markdown(row["recorded_at"])
        written = store.write_text(store.note_key(recording_id), markdown)
        columns = {name: value for name, value in asdict(note).items() if name in DIARY_NOTES.columns}
        return {
            **columns,
            "note_priority": note.priority,
            "markdown": markdown,
            "note_uri": written.uri,
            "latency_seconds": note.latency_seconds or time.perf_counter() - started,
        }

    def arm(row: dict) -> dict:
        assignment = arms[row["user"]][0] if routing else None
        return {"model_version": assignment.model_id, "arm": assignment.arm, "experiment": assignment.experiment} if assignment else {}

    return _each_recording(rows, DIARY_NOTES, "write_note", write, always=arm)


def _note_request(row: dict, template: str | None, first_choice: tuple[str, str] | None) -> NoteRequest:
    return NoteRequest(
        row["recording_id"], row["user"], row["recorded_at"], row["text"] or "", row["segments"], row.get("priority"), template, first_choice
    )


def _earlier_notes(previous: pl.DataFrame | None, requests: dict[str, NoteRequest]) -> tuple[dict[str, dict], dict[str, str]]:
    """From the stored table: the written notes to keep (their columns), and the batch record each pending
    row waits for (a pending row whose record is gone is then written like a new one)."""
    if previous is None or previous.is_empty():
        return {}, {}
    stage_columns = [c for c in DIARY_NOTES.columns if c not in IDENTITY_COLUMNS or c in ("status", "reason", "message")]
    kept, waiting = {}, {}
    for row in previous.filter(pl.col("recording_id").is_in(list(requests))).iter_rows(named=True):
        if row["status"] == STATUS_OK:
            kept[row["recording_id"]] = {c: row.get(c) for c in stage_columns}
        elif row["status"] == STATUS_PENDING and row.get("note_batch"):
            waiting[row["recording_id"]] = row["note_batch"]
    return kept, waiting


def _pending_columns(record: NoteBatch, plan: Plan) -> dict:
    return {
        "status": STATUS_PENDING,
        "message": f"the note waits in {record.provider}'s batch {record.remote_id}: written when it ends, within a day",
        "provider": record.provider,
        "model": record.model,
        "note_batch": record.id,
        "note_priority": plan.priority,
        "route": plan.route,
        "delivery": BATCH,
        "fallback_path": [f"{record.provider}/{record.model}:batch_submitted({record.remote_id})"],
    }


def _count_note(note: Note) -> None:
    meters = instruments.current()
    labels = {"provider": note.provider, "model": note.model, "delivery": note.delivery}
    instruments.current_span().set_attributes(
        {"diary.provider": note.provider, "diary.model": note.model, "diary.input_tokens": note.input_tokens,
         "diary.output_tokens": note.output_tokens, "diary.cost_usd": note.cost_usd, "diary.cached_input_tokens": note.cached_input_tokens,
         "diary.delivery": note.delivery, "diary.priority": note.priority or ""}
    )
    meters.llm_tokens.add(note.input_tokens, {**labels, "direction": "input"})
    meters.llm_tokens.add(note.output_tokens, {**labels, "direction": "output"})
    meters.llm_tokens.add(note.cached_input_tokens, {**labels, "direction": "cached_input"})
    meters.llm_saved.add(note.saved_usd, labels)
    meters.llm_cost.add(note.cost_usd, labels)
    if len(note.fallback_path) > 1:
        meters.llm_fallbacks.add(1, labels)
