"""Drop → note latency through the UI's own processes: `diary ui` (webserver, daemon, landing sensor) on a
fresh data folder, clips dropped into `landing/<user>/`, note times read from the Dagster instance.

    single    one clip at a time, each after the previous one's note: what a person dropping a recording sees
    burst     N clips at once: latency when uploads pour in, and the audio throughput of the whole burst

Latency is the `diary_notes` materialization's timestamp minus the clip's last write (its mtime). The
baseline, in the same command, is `diary run` on one clip (a fresh process: start, import, model, notes).

    .venv/bin/python benchmarks/latency.py [--singles 5] [--burst 50] [--clip ../shared/eval/speech/d01.flac]
"""

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from pathlib import Path

from common import EVAL, REPO

import dagster as dg
import numpy as np

from diary_platform.domain.catalog import DIARY_NOTES
from diary_platform.domain.shared_state import open_shared_state
from diary_platform.domain.store.hashing import recording_id_for

DIARY = str(Path(sys.executable).parent / "diary")
SAMPLE_RATE = 16_000


def variants(clip: Path, count: int, folder: Path) -> list[Path]:
    """`count` WAV files of the clip, each with its own content (a few more samples of silence at the end)."""
    from faster_whisper.audio import decode_audio

    samples = (decode_audio(str(clip), sampling_rate=SAMPLE_RATE) * 32767).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{clip.stem}-{index:03d}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(np.concatenate([samples, np.zeros(index + 1, np.int16)]).tobytes())
        paths.append(path)
    return paths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Platform:
    """`diary ui` on a data folder of its own, and what its instance says about notes."""

    def __init__(self, root: Path):
        self.data = root / "data"
        self.env = {**os.environ, "DIARY_DATA_DIR": str(self.data), "DAGSTER_HOME": str(self.data / "dagster_home")}
        self.landing = self.data / "landing"
        self.batches = open_shared_state(self.data).batches
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> float:
        port = free_port()
        started = time.monotonic()
        self.process = subprocess.Popen(
            [DIARY, "ui", "--port", str(port)], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.environ.update({k: self.env[k] for k in ("DIARY_DATA_DIR", "DAGSTER_HOME")})
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/server_info"), timeout, "the webserver")
        wait_for(self._sensor_ticked, timeout, "the landing sensor's first tick")
        return time.monotonic() - started

    def _sensor_ticked(self) -> bool:
        with dg.DagsterInstance.get() as instance:
            states = [s for s in instance.all_instigator_state() if s.instigator_name == "landing_sensor"]
            return bool(states) and bool(instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=1))

    def stop(self) -> None:
        """SIGTERM to the whole process group (webserver, daemon, code server, run workers); SIGKILL after a minute."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
            wait_for(lambda: not _group_alive(self.process.pid), 60, "the UI's processes to stop")
        except (subprocess.TimeoutExpired, TimeoutError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def note_times(self) -> dict[str, float]:
        """Recording id → when its batch's notes materialized (epoch seconds), from the instance."""
        times: dict[str, float] = {}
        with dg.DagsterInstance.get() as instance:
            records = instance.fetch_materializations(dg.AssetKey(DIARY_NOTES), limit=10_000).records
            for record in records:
                for item in self.batches.read(record.partition_key).items:
                    times.setdefault(recording_id_for(item.content_sha256), record.timestamp)
        return times


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


def wait_for(condition, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:g} s")


def drop(clip: Path, landing: Path, user: str) -> tuple[str, float]:
    """Copy a clip into the landing folder; its recording id and the time of its last write."""
    target = landing / user / clip.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip, target)
    return recording_id_for(sha256(clip)), target.stat().st_mtime


def latencies(platform: Platform, dropped: dict[str, float], timeout: float) -> list[float]:
    wait_for(lambda: dropped.keys() <= platform.note_times().keys(), timeout, f"notes for {len(dropped)} clips", every=1)
    times = platform.note_times()
    return [times[recording] - written for recording, written in dropped.items()]


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1] if len(values) > 1 else values[0]


def cli_baseline(clip: Path, root: Path) -> float:
    """`diary run` on one clip, start to exit, on a data folder of its own."""
    env = {**os.environ, "DIARY_DATA_DIR": str(root / "cli-data"), "DAGSTER_HOME": str(root / "cli-data" / "dagster_home")}
    folder = root / "cli-clip"
    folder.mkdir()
    shutil.copyfile(clip, folder / clip.name)
    subprocess.run([DIARY, "run", "--help"], env=env, capture_output=True, check=True)  # imports cached, as for the UI
    started = time.monotonic()
    subprocess.run([DIARY, "run", str(folder)], env=env, capture_output=True, check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--singles", type=int, default=5, help="clips dropped one at a time")
    parser.add_argument("--burst", type=int, default=50, help="clips dropped at once")
    parser.add_argument("--clip", type=Path, default=EVAL / "speech" / "d01.flac")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    clip = args.clip if args.clip.exists() else REPO / "examples" / "default" / "d01.flac"

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as temp:
        root = Path(temp)
        clips = variants(clip, args.singles + args.burst + 1, root / "clips")
        baseline = cli_baseline(clips[-1], root)
        print(f"baseline: `diary run` on one clip, start to exit: {baseline:.1f} s")
        platform = Platform(root)
        try:
            print(f"`diary ui` up and the landing sensor ticking after {platform.start():.1f} s")
            singles = []
            for path in clips[: args.singles]:
                recording, written = drop(path, platform.landing, "bob")
                singles += latencies(platform, {recording: written}, args.timeout)
                print(f"  single drop → note: {singles[-1]:.1f} s")
            burst_clips = clips[args.singles : args.singles + args.burst]
            started = time.time()
            dropped = dict(drop(path, platform.landing, f"user{index % 5}") for index, path in enumerate(burst_clips))
            burst = latencies(platform, dropped, args.timeout)
            burst_wall = time.time() - started
            audio = sum(wave.open(str(path)).getnframes() for path in burst_clips) / SAMPLE_RATE
        finally:
            platform.stop()
        print()
        print("| case | clips | p50 drop→note | p95 drop→note | p50 / `diary run` |")
        print("|---|---:|---:|---:|---:|")
        for case, values in (("single", singles), ("burst", burst)):
            p50 = statistics.median(values)
            print(f"| {case} | {len(values)} | {p50:.1f} s | {percentile(values, 0.95):.1f} s | {p50 / baseline:.2f} |")
        print(f"\nburst: {audio:.0f} s of audio noted in {burst_wall:.1f} s ({audio / burst_wall:.1f}x real time)")


if __name__ == "__main__":
    main()
