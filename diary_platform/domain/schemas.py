"""The table contracts between stages: one pandera schema per asset, one row per recording.

Every table carries the same identity columns, so a recording can be followed from upload to
note, and a `status` with a `reason` code and a `message` a person understands, so a recording
that failed a stage is a row that says why, never a missing row.
"""

import polars as pl
import pandera.polars as pa

STATUS_OK = "ok"
STATUS_QUARANTINED = "quarantined"
STATUSES = [STATUS_OK, STATUS_QUARANTINED]
# Only a note can wait: its recording is in a provider batch that has not answered yet.
STATUS_PENDING = "pending"

# Every reason a recording can be quarantined for: the `reason` column holds only these, and a re-drive
# filters by them (an unknown code is a typo, not an empty selection).
REASONS = {
    "empty_file": "the file is empty",
    "playlist": "a playlist or concat list, never opened",
    "too_large": "the file is over the size limit",
    "undecodable": "not a readable audio file",
    "unsupported_format": "a container format that is not accepted",
    "no_audio_stream": "the file holds no audio stream",
    "unsupported_codec": "an audio codec that is not accepted",
    "no_audio_decoded": "the file decoded to no samples",
    "too_long": "the audio runs past the duration limit",
    "too_much_memory": "decoding needed more memory than allowed",
    "decode_timeout": "decoding took longer than allowed",
    "decoder_crashed": "the decoder crashed on the file",
    "source_missing": "the upload was gone before it was stored",
    "source_changed": "the upload changed after it was picked up",
    "gave_up": "its batch failed too many times",
}

SEGMENT = pl.Struct(
    {
        "start": pl.Float64,
        "end": pl.Float64,
        "text": pl.Utf8,
        "avg_logprob": pl.Float64,
        "no_speech_prob": pl.Float64,
        "compression_ratio": pl.Float64,
    }
)
CITATION = pl.Struct(
    {"field": pl.Utf8, "text": pl.Utf8, "segments": pl.List(pl.Int64), "start": pl.Float64, "end": pl.Float64}
)
SPAN = pl.Struct({"start": pl.Float64, "end": pl.Float64})
DROPPED_SEGMENT = pl.Struct({"start": pl.Float64, "end": pl.Float64, "text": pl.Utf8, "guard": pl.Utf8})
UTC_TIME = pl.Datetime("us", "UTC")
RATIO = pa.Check.in_range(0, 1)
NON_NEGATIVE = pa.Check.ge(0)


def _identity_columns(statuses: list[str] = STATUSES) -> dict[str, pa.Column]:
    return {
        "recording_id": pa.Column(pl.Utf8, pa.Check.str_matches(r"^[0-9a-f]{24}$"), unique=True),
        "content_sha256": pa.Column(pl.Utf8, pa.Check.str_matches(r"^[0-9a-f]{64}$")),
        "batch_key": pa.Column(pl.Utf8),
        "user": pa.Column(pl.Utf8),
        "priority": pa.Column(pl.Utf8, nullable=True),
        "recorded_at": pa.Column(UTC_TIME),
        "status": pa.Column(pl.Utf8, pa.Check.isin(statuses)),
        "reason": pa.Column(pl.Utf8, pa.Check.isin(list(REASONS)), nullable=True),
        "message": pa.Column(pl.Utf8, nullable=True),
    }


IDENTITY_COLUMNS = list(_identity_columns())


def _schema(name: str, columns: dict[str, pa.Column], statuses: list[str] = STATUSES) -> pa.DataFrameSchema:
    quarantined_has_reason = pa.Check(
        lambda data: data.lazyframe.select(
            (pl.col("status") != STATUS_QUARANTINED) | pl.col("reason").is_not_null()
        ),
        name="quarantined_rows_have_a_reason",
    )
    return pa.DataFrameSchema(
        {**_identity_columns(statuses), **columns},
        name=name,
        strict=True,
        ordered=False,
        checks=[quarantined_has_reason],
    )


RAW_AUDIO = _schema(
    "raw_audio",
    {
        "source_path": pa.Column(pl.Utf8),
        "source_name": pa.Column(pl.Utf8),
        "original_uri": pa.Column(pl.Utf8, nullable=True),
        "size_bytes": pa.Column(pl.Int64, NON_NEGATIVE),
    },
)

VALIDATED_AUDIO = _schema(
    "validated_audio",
    {
        "original_uri": pa.Column(pl.Utf8, nullable=True),
        "normalised_uri": pa.Column(pl.Utf8, nullable=True),
        "container": pa.Column(pl.Utf8, nullable=True),
        "codec": pa.Column(pl.Utf8, nullable=True),
        "sample_rate": pa.Column(pl.Int64, NON_NEGATIVE, nullable=True),
        "channels": pa.Column(pl.Int64, NON_NEGATIVE, nullable=True),
        "declared_seconds": pa.Column(pl.Float64, NON_NEGATIVE, nullable=True),
        "duration_seconds": pa.Column(pl.Float64, NON_NEGATIVE, nullable=True),
        "partial": pa.Column(pl.Boolean, nullable=True),
        "bitrate": pa.Column(pl.Int64, NON_NEGATIVE, nullable=True),
        "peak_dbfs": pa.Column(pl.Float64, pa.Check.le(0), nullable=True),
        "rms_dbfs": pa.Column(pl.Float64, pa.Check.le(0), nullable=True),
        "clipping_ratio": pa.Column(pl.Float64, RATIO, nullable=True),
        "silence_ratio": pa.Column(pl.Float64, RATIO, nullable=True),
        "speech_ratio": pa.Column(pl.Float64, RATIO, nullable=True),
        "snr_db": pa.Column(pl.Float64, nullable=True),
        "quality_score": pa.Column(pl.Float64, RATIO, nullable=True),
        "warnings": pa.Column(pl.List(pl.Utf8)),
        "speech_spans": pa.Column(pl.List(SPAN), nullable=True),
        "decode_seconds": pa.Column(pl.Float64, NON_NEGATIVE),
    },
)

TRANSCRIPTS = _schema(
    "transcripts",
    {
        "text": pa.Column(pl.Utf8, nullable=True),
        "language": pa.Column(pl.Utf8, nullable=True),
        "language_probability": pa.Column(pl.Float64, nullable=True),
        "segments": pa.Column(pl.List(SEGMENT)),
        "dropped_segments": pa.Column(pl.List(DROPPED_SEGMENT)),
        "avg_logprob": pa.Column(pl.Float64, pa.Check.le(0), nullable=True),
        "model": pa.Column(pl.Utf8),
        "compute_type": pa.Column(pl.Utf8),
        "policy_rule": pa.Column(pl.Utf8),
        "transcriber_version": pa.Column(pl.Utf8),
        "model_version": pa.Column(pl.Utf8, nullable=True),
        "arm": pa.Column(pl.Utf8, pa.Check.isin(["baseline", "candidate"]), nullable=True),
        "experiment": pa.Column(pl.Utf8, nullable=True),
        "audio_seconds": pa.Column(pl.Float64, NON_NEGATIVE),
        "processing_seconds": pa.Column(pl.Float64, NON_NEGATIVE),
        "txt_uri": pa.Column(pl.Utf8, nullable=True),
        "srt_uri": pa.Column(pl.Utf8, nullable=True),
        "vtt_uri": pa.Column(pl.Utf8, nullable=True),
        "json_uri": pa.Column(pl.Utf8, nullable=True),
    },
)

DIARY_NOTES = _schema(
    "diary_notes",
    {
        "title": pa.Column(pl.Utf8, nullable=True),
        "summary": pa.Column(pl.Utf8, nullable=True),
        "events": pa.Column(pl.List(pl.Utf8)),
        "people": pa.Column(pl.List(pl.Utf8)),
        "places": pa.Column(pl.List(pl.Utf8)),
        "todos": pa.Column(pl.List(pl.Utf8)),
        "mood": pa.Column(pl.Utf8, nullable=True),
        "markdown": pa.Column(pl.Utf8, nullable=True),
        "note_uri": pa.Column(pl.Utf8, nullable=True),
        "provider": pa.Column(pl.Utf8, nullable=True),
        "model": pa.Column(pl.Utf8, nullable=True),
        "template": pa.Column(pl.Utf8, nullable=True),
        "fallback_path": pa.Column(pl.List(pl.Utf8)),
        "attempts": pa.Column(pl.Int64, NON_NEGATIVE),
        "citations": pa.Column(pl.List(CITATION)),
        "remarks": pa.Column(pl.List(pl.Utf8)),
        "input_tokens": pa.Column(pl.Int64, NON_NEGATIVE),
        "cached_input_tokens": pa.Column(pl.Int64, NON_NEGATIVE),
        "output_tokens": pa.Column(pl.Int64, NON_NEGATIVE),
        "cost_usd": pa.Column(pl.Float64, NON_NEGATIVE),
        "saved_usd": pa.Column(pl.Float64, NON_NEGATIVE),
        "latency_seconds": pa.Column(pl.Float64, NON_NEGATIVE),
        "note_priority": pa.Column(pl.Utf8, pa.Check.isin(["urgent", "normal", "bulk"]), nullable=True),
        "route": pa.Column(pl.Utf8, nullable=True),
        "delivery": pa.Column(pl.Utf8, pa.Check.isin(["synchronous", "batch"]), nullable=True),
        "note_batch": pa.Column(pl.Utf8, nullable=True),
        "model_version": pa.Column(pl.Utf8, nullable=True),
        "arm": pa.Column(pl.Utf8, pa.Check.isin(["baseline", "candidate"]), nullable=True),
        "experiment": pa.Column(pl.Utf8, nullable=True),
    },
    statuses=[*STATUSES, STATUS_PENDING],
)

DAILY_DIGEST = pa.DataFrameSchema(
    {
        "user": pa.Column(pl.Utf8),
        "day": pa.Column(pl.Date),
        "recording_ids": pa.Column(pl.List(pl.Utf8)),
        "title": pa.Column(pl.Utf8),
        "summary": pa.Column(pl.Utf8),
        "markdown": pa.Column(pl.Utf8),
        "provider": pa.Column(pl.Utf8),
        "model": pa.Column(pl.Utf8),
        "fallback_path": pa.Column(pl.List(pl.Utf8)),
        "input_tokens": pa.Column(pl.Int64, NON_NEGATIVE),
        "output_tokens": pa.Column(pl.Int64, NON_NEGATIVE),
        "cost_usd": pa.Column(pl.Float64, NON_NEGATIVE),
    },
    name="daily_digest",
    strict=True,
    unique=["user", "day"],
)

SCHEMAS = {schema.name: schema for schema in (RAW_AUDIO, VALIDATED_AUDIO, TRANSCRIPTS, DIARY_NOTES)}


def blank_row(schema: pa.DataFrameSchema) -> dict:
    """The stage's own columns before it has run: nulls, empty lists and zero measurements."""

    def blank(column: pa.Column):
        if column.nullable:
            return None
        return column.dtype.type.to_python()()

    return {name: blank(column) for name, column in schema.columns.items() if name not in IDENTITY_COLUMNS}


def table(schema: pa.DataFrameSchema, rows: list[dict]) -> pl.DataFrame:
    """Build a table from row dicts with the schema's dtypes (an empty batch still has every column) and validate it."""
    dtypes = {name: column.dtype.type for name, column in schema.columns.items()}
    frame = pl.DataFrame(rows, schema=dtypes) if rows else pl.DataFrame(schema=dtypes)
    return schema.validate(frame)
