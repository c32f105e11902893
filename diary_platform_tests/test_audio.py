"""Decoding: the normalised audio is exactly what faster-whisper would decode; bad input is rejected clearly."""

import math
import struct
import wave

import numpy as np
import pytest
from faster_whisper.audio import decode_audio

from diary_platform.domain.audio.decode import AudioRejected, decode_to_wav, read_wav
from diary_platform_tests.conftest import DATA


def _sine_wav(path, seconds: float, rate: int = 44_100, channels: int = 2):
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) * channels
        for i in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(frames)
    return path


def test_every_committed_format_decodes_to_the_samples_faster_whisper_reads(clips, tmp_path):
    for clip in clips:
        target = tmp_path / f"{clip.path.name}.wav"
        info = decode_to_wav(clip.path, target)
        assert np.array_equal(read_wav(target), decode_audio(str(clip.path))), clip.path.name
        assert info.decoded_seconds == pytest.approx(len(read_wav(target)) / 16_000)
        assert info.source_sample_rate > 0 and info.channels > 0
        assert not info.partial


def test_probe_reports_the_source_format(tmp_path):
    source = _sine_wav(tmp_path / "tone.wav", 1.5)
    info = decode_to_wav(source, tmp_path / "out.wav")
    assert (info.container, info.codec, info.source_sample_rate, info.channels) == ("wav", "pcm_s16le", 44_100, 2)
    assert info.declared_seconds == pytest.approx(1.5, abs=0.01)
    assert info.decoded_seconds == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty_file"),
        (b"this is a text file with an audio name\n" * 50, "undecodable"),
    ],
)
def test_bad_input_is_rejected_with_a_reason_and_leaves_no_output(tmp_path, content, reason):
    source = tmp_path / "upload.mp3"
    source.write_bytes(content)
    target = tmp_path / "out.wav"
    with pytest.raises(AudioRejected) as rejected:
        decode_to_wav(source, target)
    assert rejected.value.reason == reason and rejected.value.message
    assert not target.exists()
    assert source.read_bytes() == content
    assert list(tmp_path.iterdir()) == [source]


def test_the_duration_limit_is_enforced_on_decoded_audio(tmp_path):
    source = _sine_wav(tmp_path / "long.wav", 3.0, rate=16_000, channels=1)
    target = tmp_path / "out.wav"
    with pytest.raises(AudioRejected) as rejected:
        decode_to_wav(source, target, max_seconds=1.0)
    assert rejected.value.reason == "too_long"
    assert not target.exists()


def test_an_upload_cut_in_half_is_kept_and_flagged_partial(tmp_path):
    info = decode_to_wav(DATA / "bad" / "truncated.mp3", tmp_path / "out.wav")
    assert info.decoded_seconds == pytest.approx(2.27, abs=0.05)
    assert info.declared_seconds == pytest.approx(4.57, abs=0.05)
    assert info.partial
