"""How today's partition scheme (one dynamic partition per batch) behaves as partitions pile up, on Postgres.

A fresh database on the local Postgres gets the production instance (deploy/dagster.yaml). Batch
partitions and their `diary_notes` materializations are written in bulk through the instance's storage
(synthetic events, no audio), up to each checkpoint, and at each checkpoint this times what the
platform and the UI do: a sensor tick adding the partitions of 30 s at full rate, `has_dynamic_partition`,
listing every partition, the materialized partitions of an asset, and the GraphQL query behind the asset
page's partition bar and the backfill dialog (`assetPartitionStatuses`, `partitionStats`) through a real
`dagster-webserver`, and the automation daemon's tick: the platform's automation conditions (today's cost
report and digest, which depend on the batch assets) evaluated from scratch and then from the first
evaluation's cursor, as the daemon's consecutive ticks do.

At 10,000 audio hours per hour of 5-minute recordings in batches of 16 there are 7,500 batches per
hour: 180,000 partitions a day, 5.4 million a month, 65.7 million a year.

    python benchmarks/partition_scale.py [--checkpoints 10000 50000 180000] [--per-second 2.08]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STATUS_QUERY = """
query PartitionBar($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed }
      assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
    }
  }
}
"""
DSN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def _timed(work, repeat: int = 5) -> float:
    """Median seconds of `work()` over `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _materializations(keys: list[str]):
    from dagster import AssetKey, AssetMaterialization
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    now = time.time()
    return [
        EventLogEntry(
            user_message="", level=20, job_name=RUNLESS_JOB_NAME, run_id=RUNLESS_RUN_ID, error_info=None, timestamp=now,
            step_key=None,
            dagster_event=DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=RUNLESS_JOB_NAME,
                event_specific_data=StepMaterializationData(AssetMaterialization(AssetKey("diary_notes"), partition=key)),
            ),
        )
        for key in keys
    ]


def _webserver(env: dict, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "diary_platform.definitions", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                return server
        except requests.ConnectionError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("dagster-webserver did not start within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[10_000, 50_000, 180_000])
    parser.add_argument("--per-second", type=float, default=7500 / 3600, help="batches per second at full rate")
    parser.add_argument("--port", type=int, default=3311)
    args = parser.parse_args()

    database = f"diary_scale_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(**DSN)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    home = Path(tempfile.mkdtemp())
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": DSN["host"], "DAGSTER_PG_PORT": str(DSN["port"]),
           "DAGSTER_PG_DB": database, "DAGSTER_PG_USER": DSN["user"], "DAGSTER_PG_PASSWORD": "trust", "DIARY_DATA_DIR": str(home / "data")}
    os.environ.update(env)
    import dagster as dg

    tick = max(1, round(args.per_second * 30))
    print(f"database {database}; a 30 s sensor tick at full rate adds {tick} partitions")
    from diary_platform.definitions import build_definitions
    from diary_platform.settings import Settings

    defs = build_definitions(Settings())
    print(f"{'partitions':>10} {'add tick':>9} {'has':>8} {'list all':>9} {'materialized':>13} {'GraphQL bar':>12} "
          f"{'automation 1st':>15} {'next tick':>10} {'write/s':>8}")
    server = None
    try:
        with dg.DagsterInstance.get() as instance:
            made = 0
            for checkpoint in args.checkpoints:
                started, before = time.perf_counter(), made
                while made < checkpoint:
                    keys = [f"{made + i:09d}-bench" for i in range(min(5000, checkpoint - made))]
                    instance.add_dynamic_partitions("batches", keys)
                    instance.event_log_storage.store_event_batch(_materializations(keys))
                    made += len(keys)
                write_rate = (made - before) / max(time.perf_counter() - started, 1e-9)
                counter = iter(range(10**9))
                add = _timed(lambda: instance.add_dynamic_partitions("batches", [f"tick-{next(counter)}-{i}" for i in range(tick)]))
                has = _timed(lambda: instance.has_dynamic_partition("batches", f"{checkpoint // 2:09d}-bench"), 20)
                listing = _timed(lambda: instance.get_dynamic_partitions("batches"), 3)
                materialized = _timed(lambda: instance.get_materialized_partitions(dg.AssetKey("diary_notes")), 3)
                if server is None:
                    server = _webserver(env, args.port)
                query = {"query": STATUS_QUERY, "variables": {"key": {"path": ["diary_notes"]}}}
                graphql = _timed(lambda: requests.post(f"http://127.0.0.1:{args.port}/graphql", json=query, timeout=600).raise_for_status(), 3)
                started = time.perf_counter()
                first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
                automation = time.perf_counter() - started
                started = time.perf_counter()
                dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
                next_tick = time.perf_counter() - started
                print(f"{checkpoint:>10} {add * 1000:>7.1f}ms {has * 1000:>6.2f}ms {listing:>8.2f}s {materialized:>12.2f}s "
                      f"{graphql:>11.2f}s {automation:>14.2f}s {next_tick:>9.2f}s {write_rate:>8.0f}", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
