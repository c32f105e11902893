"""Untrusted uploads: every bad input gets its outcome and a reason, the batch goes on, nothing is lost."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import wave
from datetime import datetime, timezone
from pathlib import Path

import av
import dagster as dg
import numpy as np
import polars as pl
import pytest

from diary_platform import batch
from diary_platform.domain import stages
from diary_platform.domain.audio.decode import AudioRejected, decode_to_wav
from diary_platform.domain.ingest.batches import BatchStore
from diary_platform.domain.shared_state import open_shared_state
from diary_platform.domain.ingest.quarantine import list_quarantine
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.audio.sandbox import DecodeSandbox, SandboxLimits, SandboxPool
from diary_platform.domain.schemas import RAW_AUDIO, table
from diary_platform.domain.store.layout import DataStore
from diary_platform.io_manager import ParquetIOManager
from diary_platform.definitions import build_resources
from diary_platform.runner import process_files, redrive
from diary_platform_tests.conftest import DATA, new_batch

BAD = DATA / "bad"
GOOD = (DATA / ".." / ".." / "examples" / "default" / "d01.flac").resolve()
MB = 1024 * 1024


def _wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())
    return path


def _quarantine_of(data_dir: Path) -> tuple[Catalog, BatchStore]:
    store = DataStore(data_dir)
    return Catalog(store), open_shared_state(data_dir).batches


def bad_corpus(folder: Path) -> list[Path]:
    """The shared bad-input corpus: committed copies, plus the large but trivial files regenerated."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [Path(shutil.copy(BAD / name, folder / name)) for name in sorted(os.listdir(BAD)) if name != "manifest.jsonl"]
    (folder / "empty.wav").write_bytes(b"")
    files.append(folder / "empty.wav")
    files.append(_wav(folder / "silence_30s.wav", np.zeros(30 * 16_000)))
    noise = np.random.default_rng(7).normal(0, 6000, 10 * 16_000).clip(-32768, 32767)
    files.append(_wav(folder / "noise_10s.wav", noise))
    return files


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DIARY_DATA_DIR", str(root / "data"))
        env.setenv("DIARY_BATCH_MAX_FILES", "64")
        from diary_platform.settings import Settings

        settings = Settings()
        files = bad_corpus(root / "uploads")
        files.insert(3, Path(shutil.copy(GOOD, root / "uploads" / "Tagebuch März 3.flac")))
        before = {f: f.read_bytes() for f in files}
        with dg.instance_for_test() as instance:
            report = process_files(files, "alice", settings, instance)
            yield {"report": report, "files": files, "before": before, "settings": settings, "instance": instance}


EXPECTED = {
    "empty.wav": ("quarantined", {"empty_file"}),
    "not_audio.mp3": ("quarantined", {"undecodable"}),
    "random_bytes.flac": ("quarantined", {"undecodable", "no_audio_decoded", "unsupported_format"}),
    "silence_6h.flac": ("quarantined", {"too_long"}),
    "truncated.mp3": ("ok", {None}),
    "silence_30s.wav": ("ok", {None}),
    "noise_10s.wav": ("ok", {None}),
    "lying_header.wav": ("ok", {None}),
    "Tagebuch März 3.flac": ("ok", {None}),
}


def test_every_bad_input_gets_the_outcome_its_manifest_expects(bad_batch):
    manifest = [json.loads(line) for line in (BAD / "manifest.jsonl").read_text().splitlines()]
    assert {m["file"] for m in manifest} <= set(EXPECTED)
    results = {Path(r.file).name: r for r in bad_batch["report"].results}
    for name, (status, reasons) in EXPECTED.items():
        result = results[name]
        assert result.status == status, (name, result.reason, result.message)
        assert result.reason in reasons, (name, result.reason)
        if status == "quarantined":
            assert result.message and len(result.message) > 10


def test_silence_and_noise_give_no_transcript_text(bad_batch):
    results = {Path(r.file).name: r for r in bad_batch["report"].results}
    for name in ("silence_30s.wav", "noise_10s.wav", "lying_header.wav"):
        assert results[name].transcript == "", name
        assert results[name].note_markdown.startswith("# No speech recorded")


def test_measurements_and_warnings_describe_the_audio(bad_batch):
    store = DataStore(bad_batch["settings"].data_dir)
    key = bad_batch["report"].results[0].batch_key
    validated = store.read_table("validated_audio", key)
    raw = store.read_table("raw_audio", key).select("recording_id", "source_name")
    rows = {r["source_name"]: r for r in validated.join(raw, on="recording_id").iter_rows(named=True)}
    truncated = rows["truncated.mp3"]
    assert truncated["partial"] and "partial" in truncated["warnings"]
    assert truncated["duration_seconds"] < 0.9 * truncated["declared_seconds"]
    assert "Partial" in truncated["message"]
    silence = rows["silence_30s.wav"]
    assert silence["speech_ratio"] == 0 and silence["silence_ratio"] == 1.0
    assert {"mostly_silence", "very_quiet"} <= set(silence["warnings"])
    assert rows["lying_header.wav"]["duration_seconds"] == pytest.approx(1.0, abs=0.01)
    speech = rows["Tagebuch März 3.flac"]
    assert speech["warnings"] == [] and speech["quality_score"] == 1.0
    assert speech["speech_ratio"] > 0.8 and -30 < speech["rms_dbfs"] < -10 and speech["clipping_ratio"] == 0
    assert speech["codec"] == "flac" and speech["bitrate"] > 0 and speech["snr_db"] > 20


def test_originals_are_never_modified_and_stored_names_come_from_the_hash(bad_batch):
    for path, content in bad_batch["before"].items():
        assert path.read_bytes() == content
    store = DataStore(bad_batch["settings"].data_dir)
    stored = [p.name for p in (store.state_root / "hot" / "audio").rglob("*") if p.is_file()]
    assert stored and all(len(name.split(".")[0]) == 64 and name.isascii() for name in stored)
    assert not [p for p in (store.state_root / "hot" / "audio").rglob(".*.tmp")]


def test_the_quarantine_lists_every_rejected_recording(bad_batch):
    listed = {r.source_name: r for r in list_quarantine(*_quarantine_of(bad_batch["settings"].data_dir))}
    assert set(listed) == {n for n, (status, _) in EXPECTED.items() if status == "quarantined"}
    assert listed["silence_6h.flac"].reason == "too_long"
    assert listed["silence_6h.flac"].stored_original.startswith("file://")


FAULTY_WORKER = textwrap.dedent(
    """
    import ctypes, os, sys, time
    from diary_platform.domain.audio import decode_worker

    real = decode_worker.handle

    def handle(request):
        with open(request["source"], "rb") as upload:
            upload.seek(-5, os.SEEK_END)
            marker = upload.read()
        if marker == b"CRASH":
            ctypes.string_at(0)
        if marker == b"HANG!":
            time.sleep(3600)
        if marker == b"HOG!!":
            hoard = bytearray(3 * 1024 ** 3)
        return real(request)

    decode_worker.handle = handle
    decode_worker.main()
    """
)


def test_a_decoder_crash_or_hang_quarantines_only_that_recording(tmp_path):
    worker = tmp_path / "faulty_worker.py"
    worker.write_text(FAULTY_WORKER)
    store = DataStore(tmp_path / "data")
    markers = {"a.flac": b"good1", "crash.flac": b"CRASH", "b.flac": b"good2", "hang.flac": b"HANG!",
               "hog.flac": b"HOG!!", "c.flac": b"good3"}
    names = list(markers)
    rows = []
    for name, marker in markers.items():
        upload = Path(shutil.copy(GOOD, tmp_path / name))
        with open(upload, "ab") as handle:
            handle.write(marker)  # trailing bytes after the FLAC frames: ignored by the decoder
        sha = hashlib.sha256(upload.read_bytes()).hexdigest()
        stored = store.store_original(upload, sha)
        rows.append({
            "recording_id": sha[:24], "content_sha256": sha, "batch_key": "20261126T090000Z-00000000",
            "user": "alice", "recorded_at": datetime(2026, 11, 26, tzinfo=timezone.utc),
            "status": "ok", "reason": None, "message": None, "source_path": str(upload), "source_name": name,
            "original_uri": stored.uri, "size_bytes": stored.size,
        })
    limits = SandboxLimits(max_wall_seconds=5, max_memory_bytes=1536 * MB, workers=2)
    with SandboxPool(limits, command=(sys.executable, str(worker))) as sandboxes:
        validated = stages.validate(table(RAW_AUDIO, rows), store, sandboxes)
    outcome = dict(zip(names, zip(validated["status"], validated["reason"], validated["message"])))
    assert [outcome[n][0] for n in ("a.flac", "b.flac", "c.flac")] == ["ok"] * 3
    assert outcome["crash.flac"][:2] == ("quarantined", "decoder_crashed") and "SIGSEGV" in outcome["crash.flac"][2]
    assert outcome["hang.flac"][:2] == ("quarantined", "decode_timeout")
    assert outcome["hog.flac"][:2] == ("quarantined", "too_much_memory")
    assert not list((store.state_root / "hot" / "audio" / "normalised").rglob(".*.tmp"))


def _peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM: the peak resident memory of a process's own address space (reset on exec, unlike ru_maxrss)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def test_the_six_hour_file_is_rejected_early_with_little_memory(tmp_path):
    script = textwrap.dedent(
        f"""
        import json
        from pathlib import Path
        from diary_platform.domain.audio.decode import AudioRejected
        from diary_platform.domain.audio.sandbox import DecodeSandbox
        from diary_platform_tests.test_untrusted_audio import _peak_rss_mb
        target = Path({str(tmp_path / "out.wav")!r})
        with DecodeSandbox() as sandbox:
            try:
                sandbox.decode(Path({str(BAD / "silence_6h.flac")!r}), target)
                reason = None
            except AudioRejected as rejected:
                reason = rejected.reason
            worker_mb = _peak_rss_mb(sandbox._worker.pid)
        print(json.dumps({{"reason": reason, "parent_mb": _peak_rss_mb(), "worker_mb": worker_mb, "left": target.exists()}}))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    assert measured["reason"] == "too_long"
    assert not measured["left"]
    assert measured["parent_mb"] < 500 and measured["worker_mb"] < 500, measured


def test_a_file_over_the_size_limit_is_refused_before_any_decoding(tmp_path):
    with DecodeSandbox(SandboxLimits(max_file_bytes=1000)) as sandbox:
        with pytest.raises(AudioRejected) as rejected:
            sandbox.decode(GOOD, tmp_path / "out.wav")
        assert rejected.value.reason == "too_large"
        assert sandbox._worker is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"#EXTM3U\n#EXTINF:10,\nhttp://example.invalid/a.mp3\n", "playlist"),
        (b"ffconcat version 1.0\nfile '/etc/passwd'\n", "playlist"),
    ],
)
def test_playlists_are_never_opened(tmp_path, content, reason):
    source = tmp_path / "list.m4a"
    source.write_bytes(content)
    with DecodeSandbox() as sandbox:
        with pytest.raises(AudioRejected) as rejected:
            sandbox.decode(source, tmp_path / "out.wav")
    assert rejected.value.reason == reason


def test_a_container_outside_the_allowlist_is_refused(tmp_path):
    source = tmp_path / "photo.m4a"
    source.write_bytes(base64.b64decode("R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw=="))  # a 1x1 GIF
    with DecodeSandbox() as sandbox:
        with pytest.raises(AudioRejected) as rejected:
            sandbox.decode(source, tmp_path / "out.wav")
    assert rejected.value.reason == "unsupported_format"
    assert "GIF" in rejected.value.message


def test_a_redrive_after_raising_a_limit_processes_exactly_the_quarantined_recordings(tmp_path, monkeypatch, clips):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIARY_MAX_AUDIO_SECONDS", "10")
    from diary_platform.settings import Settings

    files = [clip.path for clip in clips[:4]]
    with dg.instance_for_test() as instance:
        first = process_files(files, "alice", Settings(), instance)
        too_long = {r.recording_id for r in first.results if r.reason == "too_long"}
        ok = {r.recording_id for r in first.results if r.status == "ok"}
        assert too_long and ok, "the limit splits the clips"
        assert {r.recording_id for r in list_quarantine(*_quarantine_of(tmp_path / "data"))} == too_long

        monkeypatch.setenv("DIARY_MAX_AUDIO_SECONDS", "3600")
        second = redrive(Settings(), instance)
        assert {r.recording_id for r in second.results} == too_long
        assert all(r.status == "ok" and r.transcript for r in second.results)
        assert list_quarantine(*_quarantine_of(tmp_path / "data")) == []
        assert redrive(Settings(), instance).results == []


class CorruptingIOManager(ParquetIOManager):
    """Stores a validated_audio table that breaks its contract, as a buggy writer or storage drift would."""

    def handle_output(self, context, obj):
        if context.asset_key == dg.AssetKey("validated_audio"):
            obj = obj.with_columns(pl.lit("lost").alias("status"))
        super().handle_output(context, obj)


def test_the_schema_check_blocks_downstream_of_a_broken_stored_table(tmp_path, monkeypatch):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    from diary_platform.settings import Settings

    settings = Settings()
    resources = {**build_resources(settings), "io_manager": CorruptingIOManager(store=build_resources(settings)["store"])}
    manifest = new_batch(settings, [GOOD])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", [manifest.key])
        result = dg.materialize(
            [*batch.assets(settings), *batch.CHECKS], partition_key=manifest.key, instance=instance,
            resources=resources, raise_on_error=False,
        )
        evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
        schema = evaluations[("validated_audio", "schema")]
        assert not schema.passed and schema.severity == dg.AssetCheckSeverity.ERROR
        assert schema.metadata["failures"].value >= 1
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized == {"raw_audio", "validated_audio"}, "nothing downstream read the broken table"


def test_the_quarantine_share_check_warns_when_most_of_a_batch_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    from diary_platform.settings import Settings

    uploads = bad_corpus(tmp_path / "uploads")
    files = [u for u in uploads if u.name in {"empty.wav", "not_audio.mp3", "random_bytes.flac"}] + [GOOD]
    with dg.instance_for_test() as instance:
        report = process_files(files, "alice", Settings(), instance)
        assert sum(r.status == "ok" for r in report.results) == 1
        key = dg.AssetCheckKey(dg.AssetKey("validated_audio"), "quarantine_share")
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        evaluation = record.event.dagster_event.event_specific_data
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.metadata["share"].value == 0.75
        assert all(r.note_markdown for r in report.results if r.status == "ok"), "a WARN does not stop the batch"


def _encode(path: Path, container: str, codec: str, *, video: bool = False) -> Path:
    """A small file made with PyAV's encoders: a tone in `codec`, or (video=True) frames and no audio at all."""
    with av.open(str(path), "w", format=container) as output:
        if video:
            stream = output.add_stream(codec, rate=5)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
            frames = [av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), dtype="uint8"), format="rgb24").reformat(format="yuvj420p")
                      for _ in range(5)]
        else:
            stream = output.add_stream(codec, rate=16_000, layout="mono")
            tone = (np.sin(np.arange(16_000) * 0.1) * 8000).astype("int16")
            frames = []
            for start in range(0, tone.size, 1600):
                frame = av.AudioFrame.from_ndarray(tone[start : start + 1600].reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate = 16_000
                frames.append(frame)
        for index, frame in enumerate(frames):
            frame.pts = index * (1600 if not video else 1)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("name", "container", "codec", "video", "reason"),
    [
        ("adpcm.wav", "wav", "adpcm_ms", False, "unsupported_codec"),
        ("speech.mkv", "matroska", "mp2", False, "unsupported_codec"),
        ("clip.mkv", "matroska", "mjpeg", True, "no_audio_stream"),
    ],
)
def test_an_allowed_container_with_a_refused_codec_or_no_audio_is_refused(tmp_path, name, container, codec, video, reason):
    source = _encode(tmp_path / name, container, codec, video=video)
    with DecodeSandbox() as sandbox:
        with pytest.raises(AudioRejected) as rejected:
            sandbox.decode(source, tmp_path / "out.wav")
    assert rejected.value.reason == reason
    assert not (tmp_path / "out.wav").exists() and not list(tmp_path.glob(".out.wav.*"))


def test_a_decoder_writing_past_the_decoded_size_limit_is_stopped_by_the_kernel(tmp_path):
    """RLIMIT_FSIZE is the backstop behind the count of decoded samples: with that count switched off in the real
    worker, the kernel refuses the write past the limit and the recording is `too_long`, nothing half-written left."""
    uncounted = tmp_path / "uncounted_worker.py"
    uncounted.write_text(textwrap.dedent(
        """
        from diary_platform.domain.audio import decode_worker

        real = decode_worker.handle
        decode_worker.handle = lambda request: real({**request, "max_seconds": 10 ** 9})
        decode_worker.main()
        """
    ))
    limits = SandboxLimits(max_decoded_seconds=1)
    target = tmp_path / "out.wav"
    with DecodeSandbox(limits, command=(sys.executable, str(uncounted))) as sandbox:
        with pytest.raises(AudioRejected) as rejected:
            sandbox.decode(BAD / "silence_6h.flac", target)
        assert sandbox._worker.poll() is None, "the worker survives to decode the next recording"
    assert rejected.value.reason == "too_long" and "grew past 2 MB" in rejected.value.message
    assert not target.exists() and not list(tmp_path.glob(".out.wav.*"))


def test_ffmpeg_may_open_local_files_only(tmp_path, monkeypatch):
    """A name FFmpeg would read as a protocol URL (here `concat:`, which would splice other files in) is refused."""
    shutil.copy(GOOD, tmp_path / "a.flac")
    monkeypatch.chdir(tmp_path)
    tricky = Path("concat:a.flac|a.flac")
    tricky.write_bytes(b"RIFF" + os.urandom(256))
    with pytest.raises(AudioRejected) as rejected:
        decode_to_wav(tricky, tmp_path / "out.wav")
    assert rejected.value.reason == "undecodable"
    assert not (tmp_path / "out.wav").exists()
