"""How many uploads a second one `diary serve` process takes, and how fast it answers, under concurrent clients.

A `diary serve` child process on a free loopback port over a fresh data folder (in-process rate limits
turned off); `--clients` threads, each with its own connection, upload short clips (the committed test
clips, each made unique by a few random bytes appended, so every upload is new content that is hashed
and landed) and read each one's status back. The baseline, in the same run and against the same server,
is `GET /healthz`: the cost of the HTTP stack alone. Only the API is measured: no sensor runs, so the
uploads stay queued.

    python benchmarks/api.py [--clients 8] [--uploads 25]
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2

REPO = Path(__file__).resolve().parent.parent
DIARY = str(Path(sys.executable).parent / "diary")
KEY = "bench-key-0123456789abcdef"
CLIPS = sorted(p for p in (REPO / "diary_platform_tests" / "data").iterdir() if p.suffix in {".wav", ".ogg", ".opus", ".m4a", ".mp3"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DIARY_DATA_DIR": str(root / "data"), "DIARY_API_KEYS": f"bench:{KEY}",
           "DIARY_API_REQUESTS_PER_MINUTE": "0", "DIARY_API_BYTES_PER_HOUR": "0"}
    process = subprocess.Popen([DIARY, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise SystemExit(process.stderr.read().decode())
        try:
            if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("diary serve did not come up")
        time.sleep(0.05)


def client_work(url: str, uploads: int, results: dict, lock: threading.Lock) -> None:
    posts, gets, health = [], [], []
    with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        for index in range(uploads):
            clip = CLIPS[index % len(CLIPS)]
            data = clip.read_bytes() + os.urandom(16)
            started = time.perf_counter()
            answer = client.post("/v1/recordings", files={"file": (clip.name, data, "application/octet-stream")})
            posts.append(time.perf_counter() - started)
            assert answer.status_code == 202, answer.text
            started = time.perf_counter()
            assert client.get(f"/v1/recordings/{answer.json()['id']}").status_code == 200
            gets.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.get("/healthz")
            health.append(time.perf_counter() - started)
    with lock:
        for name, values in (("post", posts), ("get", gets), ("health", health)):
            results[name].extend(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=25, help="uploads per client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        process, url = serve(Path(root))
        try:
            results: dict[str, list[float]] = {"post": [], "get": [], "health": []}
            lock = threading.Lock()
            threads = [threading.Thread(target=client_work, args=(url, args.uploads, results, lock)) for _ in range(args.clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    total = args.clients * args.uploads
    size = statistics.mean(p.stat().st_size for p in CLIPS)
    base = statistics.median(results["health"])
    print(f"{args.clients} clients x {args.uploads} uploads of ~{size / 1024:.0f} KiB: {total} accepted in {wall:.1f} s, "
          f"{total / wall:.1f} uploads/s ({total * size / wall / 1024**2:.1f} MiB/s) with a status read and a health probe after each")
    print(f"{'request':<26}{'p50 ms':>10}{'p95 ms':>10}{'p50 / healthz p50':>20}")
    for label, name in (("GET /healthz (baseline)", "health"), ("POST /v1/recordings", "post"), ("GET /v1/recordings/{id}", "get")):
        values = results[name]
        print(f"{label:<26}{percentile(values, 0.5) * 1000:>10.1f}{percentile(values, 0.95) * 1000:>10.1f}"
              f"{statistics.median(values) / base:>20.1f}")


if __name__ == "__main__":
    main()
