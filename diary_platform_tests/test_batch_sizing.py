"""Batches sized by audio: estimates from WAV headers and sizes (never by decoding), closing at the target."""

import io
import json
import struct
import wave
from datetime import datetime, timezone

import pytest

from diary_platform.domain.ingest.audio_estimate import HEADER_BYTES, estimate_audio_seconds, estimate_from_size, wav_seconds
from diary_platform.domain.ingest.batches import BatchItem, BatchManifest
from diary_platform.domain.ingest.batching import BatchLimits
from diary_platform.domain.ingest.landing import LandingCursor, batch_files
from diary_platform.settings import Settings
from diary_platform_tests.test_landing_sensor import Landing

RATE = 8000  # 8 kHz, 8-bit mono: 8,000 bytes per second keeps the test files small


def wav_bytes(seconds: float, rate: int = RATE, width: int = 1, fill: int = 0x80) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes([fill]) * int(seconds * rate) * width)
    return buffer.getvalue()


def unique_wav(seconds: float, index: int) -> bytes:
    """A WAV of `seconds` whose content differs by `index` (content is deduplicated)."""
    data = bytearray(wav_bytes(seconds))
    data[-4:] = index.to_bytes(4, "little")
    return bytes(data)


def test_a_wav_is_measured_exactly_from_its_header_whatever_its_name():
    for seconds, rate, width in [(3.0, 8000, 1), (1.5, 16000, 2), (0.25, 44100, 2)]:
        data = wav_bytes(seconds, rate, width)
        assert wav_seconds(data[:HEADER_BYTES], len(data)) == pytest.approx(seconds)
        assert estimate_audio_seconds("memo.m4a", len(data), data[:HEADER_BYTES]) == pytest.approx(seconds), "RIFF, not the name, decides"


def test_other_formats_are_estimated_from_size_at_a_low_nominal_rate():
    assert estimate_from_size("alice/memo.mp3", 160_000) == 10.0
    assert estimate_from_size("alice/memo.M4A", 80_000) == 10.0
    assert estimate_from_size("alice/memo.opus", 40_000) == 10.0
    assert estimate_from_size("alice/memo.flac", 640_000) == 10.0
    assert estimate_from_size("alice/memo", 160_000) == estimate_from_size("alice/memo.xyz", 160_000) == 10.0
    assert estimate_audio_seconds("memo.mp3", 160_000, b"ID3\x04" + bytes(100)) == 10.0


def test_a_malformed_or_lying_wav_header_falls_back_to_the_size_or_the_bytes_really_there():
    good = wav_bytes(2.0)
    size_estimate = estimate_from_size("x.wav", len(good))
    truncated_fmt = good[:20]
    assert wav_seconds(truncated_fmt, len(good)) is None
    assert estimate_audio_seconds("x.wav", len(good), truncated_fmt) == size_estimate
    no_fmt = b"RIFF" + good[4:12] + b"data" + struct.pack("<I", 16000) + bytes(16000)
    assert wav_seconds(no_fmt, len(no_fmt)) is None, "data before any fmt chunk"
    lying_rate = bytearray(good)
    struct.pack_into("<I", lying_rate, 28, 1)  # byte rate 1: a 2 s file would claim 16,000 s
    assert wav_seconds(bytes(lying_rate), len(good)) is None
    huge_chunk = bytearray(good)
    struct.pack_into("<I", huge_chunk, 16, 0xFFFFFF)  # fmt chunk runs past the header read
    assert wav_seconds(bytes(huge_chunk[:HEADER_BYTES]), len(good)) is None
    claims_more = bytearray(good)
    struct.pack_into("<I", claims_more, 40, 10 * RATE)  # says 10 s of data, holds 2 s
    assert wav_seconds(bytes(claims_more), len(good)) == pytest.approx(2.0)
    streamed = bytearray(good)
    struct.pack_into("<I", streamed, 40, 0xFFFFFFFF)
    assert wav_seconds(bytes(streamed), len(good)) == pytest.approx(2.0)
    assert wav_seconds(b"", 100) is None and wav_seconds(b"RIFF\0\0\0\0AVI ", 100) is None


def _audio_limits(**limits):
    return {"work_seconds": 5.0, "transcribe_speed": 1.0, "max_files": 100, "max_wait_seconds": 3600, **limits}


def test_batches_close_at_their_target_of_audio_and_record_each_estimate(tmp_path):
    landing = Landing(tmp_path, **_audio_limits())
    for index in range(5):
        landing.write(f"alice/{index}.wav", unique_wav(2.0, index))
    landing.tick()
    growing = landing.write("alice/growing.wav", b"still")  # the folder is not idle: only full batches close
    result = landing.tick()
    assert [len(b.items) for b in result.batches] == [2, 2], "2 s + 2 s fits 5 s; a third would pass it"
    assert [w.item.relative_path for w in landing.cursor.waiting] == ["alice/4.wav"]
    assert [i.estimated_audio_seconds for b in result.batches for i in b.items] == [2.0] * 4
    growing.unlink()
    assert [len(b.items) for b in landing.tick().batches] == [1], "idle again: the rest closes"


def test_the_file_count_still_caps_a_batch(tmp_path):
    landing = Landing(tmp_path, **_audio_limits(work_seconds=1000, max_files=3))
    for index in range(7):
        landing.write(f"bob/{index}.wav", unique_wav(0.1, index))
    landing.tick()
    assert [len(b.items) for b in landing.tick().batches] == [3, 3, 1]


def test_a_recording_longer_than_the_target_is_a_batch_of_its_own(tmp_path):
    landing = Landing(tmp_path, **_audio_limits())
    landing.write("alice/a.wav", unique_wav(1.0, 1))
    landing.write("alice/b-long.wav", unique_wav(12.0, 2))
    landing.write("alice/c.wav", unique_wav(1.0, 3))
    landing.tick()
    batches = landing.tick().batches
    assert [[i.relative_path for i in b.items] for b in batches] == [["alice/a.wav"], ["alice/b-long.wav"], ["alice/c.wav"]]


def test_the_cli_batches_by_audio_too(tmp_path):
    landing = Landing(tmp_path)
    files = [landing.write(f"{index}.wav", unique_wav(2.0, index)) for index in range(5)]
    limits = BatchLimits(**_audio_limits())
    manifests, others = batch_files(files, "alice", datetime.now(timezone.utc), landing.intake, limits)
    assert [len(m.items) for m in manifests] == [2, 2, 1] and others == []
    assert manifests[0].items[0].estimated_audio_seconds == pytest.approx(2.0)


def test_manifests_and_cursors_written_before_estimates_still_load():
    item = {"user": "alice", "source_path": "/up/a.mp3", "relative_path": "alice/a.mp3", "size": 160_000, "mtime_ns": 1, "content_sha256": "a" * 64}
    manifest = BatchManifest.from_json(json.dumps({"key": "035016-20261129-d29243e7", "created_at": "x", "owner": None, "items": [item]}))
    assert manifest.items[0].estimated_audio_seconds is None
    cursor = LandingCursor.from_json(json.dumps({"pending": {}, "waiting": [{**item, "ready_at": "2026-11-29T00:00:00+00:00"}], "resume_after": ""}))
    assert cursor.waiting[0].item == BatchItem(**item)


def test_the_target_is_configured_as_work_seconds_at_a_speed(monkeypatch, tmp_path):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path))
    assert Settings().batch_limits.target_audio_seconds == 600 * 11
    assert Settings().batch_limits.max_files == 256
    monkeypatch.setenv("DIARY_BATCH_WORK_SECONDS", "120")
    monkeypatch.setenv("DIARY_TRANSCRIBE_SPEED", "30")
    assert Settings().batch_limits.target_audio_seconds == 3600
    monkeypatch.delenv("DIARY_TRANSCRIBE_SPEED")
    monkeypatch.setenv("DIARY_ENVIRONMENT", "k8s")
    assert (Settings().batch_limits.work_seconds, Settings().batch_limits.transcribe_speed) == (120, 50), "the GPU default (assumed)"
