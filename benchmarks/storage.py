"""What the storage layer's guarantees cost, as ratios against plain writes in the same process.

- local writes: `LocalTieredStore.write_bytes` (temp file, fsync, rename, directory fsync) against
  `Path.write_bytes` (no fsync) and against a plain write with one fsync;
- unchanged rewrites: the MD5 comparison that skips an identical value, against writing it again;
- tiering: one pass of the storage job's moves (hot → warm), in objects per second;
- GCS (gcp-storage-emulator on 127.0.0.1): `GcsStore.write_bytes` against the google-cloud-storage
  client's own `upload_from_string` of the same objects.

Run: .venv/bin/python benchmarks/storage.py [objects]
"""

import os
import socketserver
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diary_platform.domain.store.objects import GcsStore, LocalTieredStore  # noqa: E402
from diary_platform.domain.store.tiering import TieringPolicy, apply_tiering  # noqa: E402

SIZE = 16 * 1024


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _payloads(count: int) -> list[bytes]:
    return [os.urandom(SIZE) for _ in range(count)]


def local(count: int) -> None:
    payloads = _payloads(count)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        plain_dir = root / "plain"
        plain_dir.mkdir()

        def plain():
            for index, data in enumerate(payloads):
                (plain_dir / f"{index}.bin").write_bytes(data)

        def plain_fsync():
            for index, data in enumerate(payloads):
                with open(plain_dir / f"f{index}.bin", "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())

        store = LocalTieredStore(root / "store")

        def atomic():
            for index, data in enumerate(payloads):
                store.write_bytes(f"notes/{index}.md", data)

        baseline, synced, stored = _timed(plain), _timed(plain_fsync), _timed(atomic)
        skipped = _timed(atomic)
        print(f"local, {count} objects of {SIZE // 1024} KiB")
        print(f"  plain write_bytes        {baseline:7.3f} s")
        print(f"  plain write + fsync      {synced:7.3f} s")
        print(f"  store.write_bytes        {stored:7.3f} s  ratio to plain {stored / baseline:6.1f}x, to plain+fsync {stored / synced:5.2f}x")
        print(f"  unchanged rewrite (skip) {skipped:7.3f} s  ratio to its first write {skipped / stored:5.2f}")

        later = datetime.now(timezone.utc) + timedelta(days=40)
        moved = _timed(lambda: apply_tiering(store, TieringPolicy(30, 180), later))
        print(f"  tiering pass, {count} moves hot -> warm: {moved:6.3f} s ({count / moved:,.0f} objects/s)")


def gcs(count: int) -> None:
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    # The emulator prints a traceback for every client that closes a kept-alive connection; quiet it.
    socketserver.BaseServer.handle_error = lambda self, request, address: None
    port = 9000 + uuid.uuid4().int % 1000
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        client = storage.Client(project="bench")
        bucket = client.create_bucket("bench")
        payloads = _payloads(count)
        baseline = _timed(lambda: [bucket.blob(f"raw/{i}").upload_from_string(d) for i, d in enumerate(payloads)])
        store = GcsStore("gs://bench/store", client)
        stored = _timed(lambda: [store.write_bytes(f"notes/{i}.md", d) for i, d in enumerate(payloads)])
        skipped = _timed(lambda: [store.write_bytes(f"notes/{i}.md", d) for i, d in enumerate(payloads)])
        print(f"gcs emulator, {count} objects of {SIZE // 1024} KiB")
        print(f"  client upload_from_string {baseline:7.3f} s")
        print(f"  GcsStore.write_bytes      {stored:7.3f} s  ratio {stored / baseline:5.2f}x (an existence/MD5 lookup, then the upload)")
        print(f"  unchanged rewrite (skip)  {skipped:7.3f} s  ratio {skipped / baseline:5.2f}x (the lookup only)")
    finally:
        server.stop()


if __name__ == "__main__":
    objects = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    local(objects)
    gcs(max(objects // 10, 50))
