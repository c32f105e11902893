"""Cross-recording batching: recordings' speech laid out in shared model windows and mapped back.

Unit tests of the layout (no model), then the real model on the committed clips: a recording
transcribed inside a packed batch keeps its text and its times against its own single-file run.
"""

import difflib
import wave
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio
from whisper_normalizer.english import EnglishTextNormalizer

from diary_platform.domain.audio.measurements import speech_spans
from diary_platform.domain.speech.packing import SAMPLE_RATE, Piece, pack, speech_chunks
from diary_platform.domain.speech.transcription import Speech, Transcriber, TranscriberConfig
from diary_platform.evaluation import word_error_rate
from diary_platform.resources import WhisperTranscriber

SECOND = SAMPLE_RATE


def test_a_span_longer_than_a_window_is_cut_into_window_sized_chunks():
    chunks = list(speech_chunks([(0.5, 1.0), (2.0, 9.5)], max_samples=3 * SECOND))
    assert chunks == [(8000, 16000), (32000, 80000), (80000, 128000), (128000, 152000)]
    assert all(end - start <= 3 * SECOND for start, end in chunks)


def test_recordings_share_windows_only_when_asked_and_no_window_overflows():
    recordings = [("a", [(0.0, 4.0), (10.0, 13.0)]), ("b", [(1.0, 3.0)]), ("c", [(0.0, 9.0)])]
    shared = list(pack(recordings, window_samples=10 * SECOND, gap_samples=SECOND // 2, across_recordings=True))
    alone = list(pack(recordings, window_samples=10 * SECOND, gap_samples=SECOND // 2, across_recordings=False))
    assert [sorted(w.recordings) for w in shared] == [["a", "b"], ["c"]]
    assert [sorted(w.recordings) for w in alone] == [["a"], ["b"], ["c"]]
    for window in shared + alone:
        assert window.length <= 10 * SECOND
        for before, after in zip(window.pieces, window.pieces[1:]):
            assert after.window_start == before.window_end + SECOND // 2, "pieces are set apart by the gap"
    placed = sorted((p.recording, p.source_start, p.length) for w in shared for p in w.pieces)
    assert placed == [("a", 0, 4 * SECOND), ("a", 10 * SECOND, 3 * SECOND), ("b", SECOND, 2 * SECOND), ("c", 0, 9 * SECOND)]


def test_a_window_time_maps_to_its_recording_and_a_gap_to_the_nearest_piece():
    (window,) = pack([("a", [(5.0, 7.0)]), ("b", [(20.0, 22.0)])], 30 * SECOND, SECOND, across_recordings=True)
    assert window.pieces == [Piece("a", 5 * SECOND, 2 * SECOND, 0), Piece("b", 20 * SECOND, 2 * SECOND, 3 * SECOND)]
    assert window.piece_at(1.0).recording == "a" and window.piece_at(1.0).to_source(1.0) == 6.0
    assert window.piece_at(3.5).recording == "b" and window.piece_at(3.5).to_source(3.5) == 20.5
    assert window.piece_at(2.2).recording == "a" and window.piece_at(2.2).to_source(2.2) == 7.0, "clamped into the piece"
    assert window.piece_at(2.8).recording == "b" and window.piece_at(2.8).to_source(2.8) == 20.0


def test_the_resource_carries_every_transcriber_setting():
    assert set(WhisperTranscriber.model_fields) == {f.name for f in fields(TranscriberConfig)} | {"policy_file", "registry_file"}


def _normalised_wav(clip, folder: Path, lead_seconds: float = 0.0) -> Speech:
    """A clip as the validation step leaves it: a 16 kHz WAV, with its speech spans."""
    audio = np.concatenate([np.zeros(int(lead_seconds * SECOND), np.float32), decode_audio(str(clip.path), sampling_rate=SECOND)])
    path = folder / f"{clip.path.stem}.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SECOND)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    spans, seconds = speech_spans(path)
    return Speech(clip.path.stem, path, spans, seconds)


def _words(transcript) -> list[tuple[str, float, float]]:
    normalise = EnglishTextNormalizer()
    return [(normalise(w["word"]), w["start"], w["end"]) for s in transcript.segments for w in s.words if normalise(w["word"])]


@pytest.fixture(scope="module")
def batch(clips, tmp_path_factory):
    """The committed clips, some with leading silence (so times in the recording differ from times in its
    window), transcribed alone, in one batch of one-recording windows, and in one batch of shared windows."""
    folder = tmp_path_factory.mktemp("packed")
    recordings = [_normalised_wav(clip, folder, lead_seconds=3.0 * (i % 3)) for i, clip in enumerate(clips)]
    single = {r.key: Transcriber(TranscriberConfig(packing="per_file", word_timestamps=True)).transcribe_file(r.wav) for r in recordings}
    batched = {
        packing: Transcriber(TranscriberConfig(packing=packing, word_timestamps=True)).transcribe_batch(recordings)
        for packing in ("recording", "shared")
    }
    return recordings, single, batched


def test_recordings_share_windows_in_the_batch(batch):
    recordings, _, _ = batch
    windows = list(pack(((r.key, r.spans) for r in recordings), 28 * SECOND, int(0.6 * SECOND), across_recordings=True))
    assert len(windows) < len(recordings) and any(len(w.recordings) > 1 for w in windows)


def test_a_recording_batched_with_others_has_the_segments_of_its_single_file_run_within_half_a_second(batch, clips):
    recordings, single, batched = batch
    for recording, clip in zip(recordings, clips):
        mine, theirs = batched["recording"][recording.key].segments, single[recording.key].segments
        assert len(mine) == len(theirs), (recording.key, mine, theirs)
        for segment, their in zip(mine, theirs):
            assert abs(segment.start - their.start) <= 0.5 and abs(segment.end - their.end) <= 0.5, (recording.key, segment, their)
        assert word_error_rate([clip.text], [batched["recording"][recording.key].text]) <= word_error_rate([clip.text], [single[recording.key].text]) + 0.05


def test_each_recording_in_a_shared_window_keeps_its_words_and_their_times(batch, clips):
    """Within 0.5 s of the single-file run; at the start of a speech span the single-file run puts the first
    word at the span's padded start (the VAD pads speech by 0.4 s), so there the pad is allowed too."""
    recordings, single, batched = batch
    for recording, clip in zip(recordings, clips):
        mine, theirs = _words(batched["shared"][recording.key]), _words(single[recording.key])
        matcher = difflib.SequenceMatcher(a=[w for w, _, _ in mine], b=[w for w, _, _ in theirs], autojunk=False)
        pairs = [(mine[m.a + k], theirs[m.b + k]) for m in matcher.get_matching_blocks() for k in range(m.size)]
        assert len(pairs) >= 0.6 * len(theirs), (recording.key, mine, theirs)  # the rest: words decoded differently
        span_starts = [start for start, _ in recording.spans]
        for (word, start, end), (_, their_start, their_end) in pairs:
            padded = any(abs(their_start - s) < 0.05 for s in span_starts)
            assert abs(start - their_start) <= 0.5 + 0.4 * padded and abs(end - their_end) <= 0.5, (recording.key, word, start, their_start)
        assert word_error_rate([clip.text], [batched["shared"][recording.key].text]) <= word_error_rate([clip.text], [single[recording.key].text]) + 0.15


def test_no_word_of_one_recording_lands_in_another(batch, clips):
    _, _, batched = batch
    normalise = EnglishTextNormalizer()
    for clip in clips:
        transcript = batched["shared"][clip.path.stem]
        reference = set(normalise(clip.text).split())
        heard = normalise(transcript.text).split()
        strangers = [w for w in heard if w not in reference]
        assert len(strangers) <= max(3, len(heard) // 4), (clip.path.stem, strangers)
        assert transcript.segments and transcript.segments[-1].end <= transcript.audio_seconds + 0.01


def test_a_batch_is_transcribed_in_groups_of_bounded_audio_and_a_long_recording_goes_alone():
    from diary_platform.domain.stages import audio_groups

    rows = [{"id": i, "duration_seconds": seconds} for i, seconds in enumerate([3000, 3000, 3000, 9000, 100, 100])]
    groups = audio_groups(rows, 7200)
    assert [[r["id"] for r in group] for group in groups] == [[0, 1], [2], [3], [4, 5]]
    assert [r for group in groups for r in group] == rows, "every row once, in order"
