"""What a tick of the landing bucket sensor costs over a big bucket, against the folder sensor on the same files.

The emulator (gcp-storage-emulator, listing as Cloud Storage documents it: diary_platform_tests/gcs_listing.py)
runs in a child process, so this process holds only the sensor: its time and memory are the sensor's and the
client's. A bucket gets N small objects under `landing/<user>/`; then, each with fresh claims:

- bucket sensor, default limits (5,000 names per tick): the ticks of the first sweep, which read every new
  object once, then steady ticks, first within the default clock-skew margin (objects written in the last
  5 minutes still cost a claim lookup) and then as if past it (margin 0 here: the high-water mark skips
  every claim lookup);
- a whole-bucket listing per tick, what a sensor without a cursor would do;
- the folder sensor (baseline) on the same N files on local disk: its first ticks and steady ticks.

Each tick runs twice: once for its time, once under tracemalloc for its peak of Python memory (the
second pass on its own claims, so both see the same work).

    python benchmarks/bucket_sensor.py [--objects 10000] [--steady 3]
"""

import argparse
import multiprocessing
import os
import socketserver
import sys
import tempfile
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diary_platform.domain.ingest.batches import FileBatchStore  # noqa: E402
from diary_platform.domain.ingest.batching import BatchLimits  # noqa: E402
from diary_platform.domain.ingest.bucket import BucketCursor, BucketScanner, ContentAliases  # noqa: E402
from diary_platform.domain.ingest.claims import FileClaims, Owner  # noqa: E402
from diary_platform.domain.ingest.landing import Intake, LandingCursor, LandingScanner  # noqa: E402
from diary_platform.domain.ingest.recovery import BatchState  # noqa: E402

USERS = 20


def _serve(port: int, ready) -> None:
    from gcp_storage_emulator.server import create_server
    from gcp_storage_emulator.storage import Storage

    from diary_platform_tests.gcs_listing import documented_listings

    socketserver.BaseServer.handle_error = lambda self, request, address: None  # quiet closed keep-alives
    # The emulator rewrites a JSON file of every object's metadata after each write, which makes filling a
    # bucket quadratic; in memory nothing ever reads that file back.
    Storage._write_config_to_file = lambda self: None
    with documented_listings():
        create_server("127.0.0.1", port, in_memory=True).start()
        ready.set()
        while True:
            time.sleep(3600)


def _payload(index: int) -> bytes:
    return f"recording {index} ".encode() * 8


def _name(index: int) -> str:
    return f"user{index % USERS:02d}/{index:06d}.ogg"


def _intake(state: Path) -> Intake:
    return Intake(FileBatchStore(state / "batches"), FileClaims(state / "claims"), Owner.this_process("sensor"), lambda key: BatchState.RUNNING)


def _measure(tick, cursor, now):
    """Seconds of one tick; and the peak of Python memory of the same tick on the twin scanner."""
    started = time.perf_counter()
    result = tick[0](cursor, now)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    tick[1](cursor, now)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak


def _line(label: str, seconds: float, peak: int, detail: str) -> None:
    print(f"  {label:<34} {seconds * 1000:9.0f} ms  peak {peak / 2**20:7.1f} MiB  {detail}")


def bucket_ticks(client, bucket, root: Path, steady: int) -> None:
    twins = [
        BucketScanner(client, f"gs://{bucket.name}/landing", _intake(root / name), ContentAliases(root / name / "aliases"), BatchLimits())
        for name in ("timed", "traced")
    ]
    cursor = BucketCursor()

    def tick(label: str | None) -> None:
        nonlocal cursor
        result, seconds, peak = _measure((twins[0].tick, twins[1].tick), cursor, datetime.now(timezone.utc))
        cursor = BucketCursor.from_json(result.cursor.to_json())
        if label:
            detail = f"{result.objects_listed} listed, {result.bytes_read} bytes read, {len(result.batches)} batches, cursor {len(cursor.to_json())} B"
            _line(label, seconds, peak, detail)

    def sweep(label: str | None) -> None:
        ticks = 0
        while ticks == 0 or cursor.resume_after:
            ticks += 1
            tick(f"{label}, tick {ticks}" if label else None)

    print("bucket sensor, default limits (5,000 names per tick), default 5 min clock-skew margin:")
    sweep("first sweep")
    for index in range(steady):
        tick(f"steady tick {index + 1}")
    print("bucket sensor, objects older than the margin (the high-water mark skips their claims):")
    for twin in twins:
        twin.clock_skew = timedelta(0)
    sweep(None)  # the sweep that sets the mark
    for index in range(steady):
        tick(f"steady tick {index + 1}")


def full_listing(client, bucket, repeat: int) -> None:
    print("whole-bucket listing per tick (no cursor):")
    for index in range(repeat):
        started = time.perf_counter()
        count = sum(1 for _ in client.list_blobs(bucket.name, prefix="landing/"))
        seconds = time.perf_counter() - started
        tracemalloc.start()
        names = [blob.name for blob in client.list_blobs(bucket.name, prefix="landing/")]
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        _line(f"listing {index + 1}", seconds, peak, f"{count} objects, {len(names)} names kept")


def folder_ticks(count: int, root: Path, steady: int) -> None:
    landing = root / "landing"
    for index in range(count):
        path = landing / _name(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_payload(index))
    print("folder sensor (baseline), same files on local disk, default limits:")
    timed, traced = (LandingScanner(landing, _intake(root / name), BatchLimits()) for name in ("timed", "traced"))
    cursor = LandingCursor()
    now = datetime.now(timezone.utc)
    for index in range(4 + steady):
        now += timedelta(seconds=5)
        result, seconds, peak = _measure((timed.tick, traced.tick), cursor, now)
        cursor = LandingCursor.from_json(result.cursor.to_json())
        label = f"tick {index + 1}" if index < 4 else f"steady tick {index - 3}"
        _line(label, seconds, peak, f"{result.files_scanned} scanned, {len(result.batches)} batches, cursor {len(cursor.to_json())} B")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--steady", type=int, default=3)
    args = parser.parse_args()

    port = 9000 + uuid.uuid4().int % 1000
    ready = multiprocessing.get_context("fork").Event()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    ready.wait(30)
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    from google.cloud import storage

    try:
        client = storage.Client(project="bench")
        bucket = client.create_bucket("landing-bench")
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:  # the emulator serves one request at a time, with a backlog of 5
            list(pool.map(lambda i: bucket.blob(f"landing/{_name(i)}").upload_from_string(_payload(i)), range(args.objects)))
        print(f"{args.objects} objects of {len(_payload(0))} B under {USERS} users, uploaded in {time.perf_counter() - started:.1f} s")
        with tempfile.TemporaryDirectory() as folder:
            bucket_ticks(client, bucket, Path(folder) / "bucket", args.steady)
            full_listing(client, bucket, args.steady)
            folder_ticks(args.objects, Path(folder) / "folder", args.steady)
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
