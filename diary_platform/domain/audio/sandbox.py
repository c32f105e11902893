"""Decoding untrusted uploads in a child process with limits enforced while it decodes.

One worker process serves many recordings (start-up is paid once per batch), and a pool of them
decodes side by side; the parent enforces a wall-time
limit per file and the kernel enforces the memory limit (RLIMIT_AS) and the written-bytes limit
(RLIMIT_FSIZE) inside the child. A crash (segfault, abort) or a hang of the decoder costs only the
recording being decoded: the worker is replaced and the batch goes on.
"""

import json
import os
import queue
import resource
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from diary_platform.domain.audio.decode import DEFAULT_MAX_DECODED_SECONDS, AudioInfo, AudioRejected, SAMPLE_RATE
from diary_platform.domain.audio.measurements import Measurements
from diary_platform.domain.store.objects import NoSpaceLeft

WORKER_COMMAND = (sys.executable, "-m", "diary_platform.domain.audio.decode_worker")
_LIVE_WORKERS: set[subprocess.Popen] = set()


def stop_all_workers() -> None:
    """Kill every decode worker of this process at once (each runs in its own session, so it would not
    notice its parent dying until it had finished its file): for a process that must stop now."""
    for worker in list(_LIVE_WORKERS):
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
WAV_HEADER_BYTES = 44


@dataclass(frozen=True)
class SandboxLimits:
    max_file_bytes: int = 500 * 1024 * 1024
    max_decoded_seconds: float = DEFAULT_MAX_DECODED_SECONDS
    max_wall_seconds: float = 600.0
    max_memory_bytes: int = 2 * 1024 * 1024 * 1024
    workers: int = 2

    @property
    def max_decoded_bytes(self) -> int:
        """The normalised WAV may grow to the duration limit and one decoder buffer more, no further."""
        return int((self.max_decoded_seconds + 60) * SAMPLE_RATE * 2) + WAV_HEADER_BYTES


@dataclass(frozen=True)
class DecodeResult:
    info: AudioInfo
    measurements: Measurements


def _limit_child(limits: SandboxLimits):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_decoded_bytes, limits.max_decoded_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


class DecodeSandbox:
    """Use as a context manager around a batch: `sandbox.decode(source, target)` per recording."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), command: tuple[str, ...] = WORKER_COMMAND):
        self.limits = limits
        self.command = command
        self._worker: subprocess.Popen | None = None

    def __enter__(self) -> "DecodeSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def _start(self) -> subprocess.Popen:
        if self._worker is None or self._worker.poll() is not None:
            self._worker = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                preexec_fn=_limit_child(self.limits),
            )
            _LIVE_WORKERS.add(self._worker)
        return self._worker

    def _stop(self) -> None:
        if self._worker is not None:
            if self._worker.poll() is None:
                os.killpg(self._worker.pid, signal.SIGKILL)
            self._worker.wait()
            _LIVE_WORKERS.discard(self._worker)
            self._worker = None

    def decode(self, source: Path, target: Path) -> DecodeResult:
        size = source.stat().st_size
        if size > self.limits.max_file_bytes:
            raise AudioRejected(
                "too_large", f"The file is {size / 1e6:.0f} MB; the limit is {self.limits.max_file_bytes / 1e6:.0f} MB."
            )
        worker = self._start()
        request = {"source": str(source), "target": str(target), "max_seconds": self.limits.max_decoded_seconds}
        try:
            worker.stdin.write(json.dumps(request) + "\n")
            worker.stdin.flush()
        except BrokenPipeError:
            pass
        answer = self._answer(worker)
        if answer is None:
            _remove_partial_output(target)
            raise self._failure(worker)
        if "fault" in answer:
            raise NoSpaceLeft(target.parent)
        if not answer["ok"]:
            raise AudioRejected(answer["reason"], answer["message"])
        return DecodeResult(AudioInfo(**answer["info"]), Measurements(**answer["measurements"]))

    def _answer(self, worker: subprocess.Popen) -> dict | None:
        """The worker's answer, or None when it died or ran out of time (then it is gone)."""
        deadline = time.monotonic() + self.limits.max_wall_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([worker.stdout], [], [], remaining)
            if ready:
                line = worker.stdout.readline()
                if line:
                    return json.loads(line)
                worker.wait()
                return None
        self._stop()
        return None

    def _failure(self, worker: subprocess.Popen) -> AudioRejected:
        if self._worker is None:
            return AudioRejected(
                "decode_timeout", f"Decoding took longer than {self.limits.max_wall_seconds:g} s and was stopped."
            )
        code = worker.returncode
        how = signal.Signals(-code).name if code < 0 else f"exit status {code}"
        return AudioRejected(
            "decoder_crashed", f"The decoder crashed on this file ({how}); the rest of the batch went on."
        )


def _remove_partial_output(target: Path) -> None:
    """A killed worker may leave its temp file beside the target (never the target itself)."""
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


class SandboxPool:
    """Several sandboxes decoding side by side (one thread each, one worker process each)."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), command: tuple[str, ...] = WORKER_COMMAND):
        self.sandboxes = [DecodeSandbox(limits, command) for _ in range(max(1, limits.workers))]

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        for sandbox in self.sandboxes:
            sandbox._stop()

    def decode_all(self, jobs: list[tuple[Path, Path]]) -> list[tuple[DecodeResult | AudioRejected, int, int]]:
        """(result, start ns, end ns) in the order of `jobs`; a rejection is returned in its place, never raised."""
        free: queue.Queue[DecodeSandbox] = queue.Queue()
        for sandbox in self.sandboxes:
            free.put(sandbox)

        def run(job: tuple[Path, Path]) -> tuple[DecodeResult | AudioRejected, int, int]:
            sandbox = free.get()
            started = time.time_ns()
            try:
                return sandbox.decode(*job), started, time.time_ns()
            except AudioRejected as rejected:
                return rejected, started, time.time_ns()
            finally:
                free.put(sandbox)

        with ThreadPoolExecutor(max_workers=len(self.sandboxes)) as threads:
            return list(threads.map(run, jobs))
