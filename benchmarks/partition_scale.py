"""Whether the batch partition scheme holds for a year at full rate, on Postgres.

A fresh database on the local Postgres gets the production instance (deploy/dagster.yaml). Day by day,
the batch partitions of a day at full rate and their `diary_notes` materializations are written in bulk
through the instance's storage (synthetic events, no audio); keys older than the retention leave the
partition set (batch/retention.py; in bulk here, with the storage's own delete statement, while the
per-key cost of the API the sensor uses is timed separately). On each checkpoint day this times what
the platform and the UI do: a landing-sensor tick adding the partitions of 30 s at full rate,
`has_dynamic_partition`, listing every live key, the materialized partitions of the asset (the whole
event history), the GraphQL query behind the asset page's partition bar and the backfill dialog
(`assetPartitionStatuses`, `partitionStats`) through a real `dagster-webserver`, a tick of
`todays_refresh` (what replaced the automation conditions over every batch partition), and deleting keys
through `delete_dynamic_partition`.

At 10,000 audio hours per hour, batches closed at 600 s of GPU work at an assumed 50x real time
(30,000 audio seconds, 100 five-minute recordings) make 1,200 batches an hour, 28,800 a day; 16-file
batches made 180,000 a day (`--per-day 180000 --retention-days 0` measures that scheme).

    python benchmarks/partition_scale.py [--per-day 28800] [--days 1 7 30] [--retention-days 7]
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


def _materializations(keys: list[str], run_id: str):
    from dagster import AssetKey, AssetMaterialization
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.utils import RUNLESS_JOB_NAME

    now = time.time()
    return [
        EventLogEntry(
            user_message="", level=20, job_name=RUNLESS_JOB_NAME, run_id=run_id, error_info=None, timestamp=now,
            step_key=None,
            dagster_event=DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=RUNLESS_JOB_NAME,
                event_specific_data=StepMaterializationData(AssetMaterialization(AssetKey("diary_notes"), partition=key)),
            ),
        )
        for key in keys
    ]


def _partition_bar(port: int, query: dict) -> None:
    """The UI's query; an answer without the asset's partition stats (a code location that failed to load) stops the run."""
    response = requests.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=600)
    response.raise_for_status()
    node = (response.json().get("data") or {}).get("assetNodeOrError") or {}
    if "partitionStats" not in node:
        raise SystemExit(f"the webserver did not answer with the asset's partitions: {response.text[:2000]}")


def _day_run(day: int) -> str:
    """The run id the synthetic events of one day carry, so that a day's history can go the way a run's does."""
    return f"bench-day-{day:04d}"


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


def _refresh_tick(instance, defs) -> None:
    import dagster as dg

    from diary_platform.daily.todays_refresh import todays_refresh

    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        todays_refresh.evaluate_tick(context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-day", type=int, default=28_800, help="batch partitions a day at full rate")
    parser.add_argument("--days", nargs="+", type=int, default=[1, 7, 30], help="checkpoint days")
    parser.add_argument("--retention-days", type=int, default=7, help="0 keeps every key")
    parser.add_argument("--run-retention", action="store_true", help="also delete the expired days' events, as deleting their runs does")
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

    from diary_platform.definitions import build_definitions
    from diary_platform.settings import Settings

    defs = build_definitions(Settings())
    tick = max(1, round(args.per_day / 86_400 * 30))
    print(f"database {database}; {args.per_day} batch partitions a day, kept {args.retention_days or 'all'} days; "
          f"a 30 s sensor tick adds {tick}")
    print(f"{'day':>4} {'live keys':>10} {'events kept':>11} {'add tick':>9} {'has':>8} {'list all':>9} {'materialized':>13} "
          f"{'GraphQL bar':>12} {'bar, new key':>14} {'refresh tick':>13} {'delete/key':>11} {'write/s':>8}")
    server = None
    stored = psycopg2.connect(**{**DSN, "dbname": database})
    stored.autocommit = True
    try:
        with dg.DagsterInstance.get() as instance:
            events = 0
            for day in range(1, max(args.days) + 1):
                started = time.perf_counter()
                for first in range(0, args.per_day, 5000):
                    keys = [f"{day:04d}-{i:06d}-bench" for i in range(first, min(first + 5000, args.per_day))]
                    instance.add_dynamic_partitions("batches", keys)
                    instance.event_log_storage.store_event_batch(_materializations(keys, _day_run(day)))
                    events += len(keys)
                write_rate = args.per_day / max(time.perf_counter() - started, 1e-9)
                if args.retention_days and day > args.retention_days:
                    stored.cursor().execute(
                        "DELETE FROM dynamic_partitions WHERE partitions_def_name = 'batches' AND partition LIKE %s",
                        (f"{day - args.retention_days:04d}-%",),
                    )
                    if args.run_retention:
                        instance.event_log_storage.delete_events(_day_run(day - args.retention_days))
                        events -= args.per_day
                if day not in args.days:
                    continue
                live = len(instance.get_dynamic_partitions("batches"))
                counter = iter(range(10**9))
                add = _timed(lambda: instance.add_dynamic_partitions("batches", [f"tick-{next(counter)}-{i}" for i in range(tick)]))
                has = _timed(lambda: instance.has_dynamic_partition("batches", f"{day:04d}-{args.per_day // 2:06d}-bench"), 20)
                listing = _timed(lambda: instance.get_dynamic_partitions("batches"), 3)
                materialized = _timed(lambda: instance.get_materialized_partitions(dg.AssetKey("diary_notes")), 3)
                if server is None:
                    server = _webserver(env, args.port)
                query = {"query": STATUS_QUERY, "variables": {"key": {"path": ["diary_notes"]}}}
                bar = lambda: _partition_bar(args.port, query)
                graphql = _timed(bar, 3)
                changed = _timed(lambda: (instance.add_dynamic_partitions("batches", [f"tick-{next(counter)}-0"]), bar()), 3)
                refresh = _timed(lambda: _refresh_tick(instance, defs), 3)
                ticks = [f"tick-{i}-{j}" for i in range(next(counter)) for j in range(tick)][:200]
                started = time.perf_counter()
                for key in ticks:
                    instance.delete_dynamic_partition("batches", key)
                delete = (time.perf_counter() - started) / max(len(ticks), 1)
                print(f"{day:>4} {live:>10} {events:>11} {add * 1000:>7.1f}ms {has * 1000:>6.2f}ms {listing:>8.2f}s "
                      f"{materialized:>12.2f}s {graphql:>11.2f}s {changed:>13.2f}s {refresh * 1000:>11.1f}ms {delete * 1000:>9.2f}ms "
                      f"{write_rate:>8.0f}", flush=True)
    finally:
        stored.close()
        if server is not None:
            server.terminate()
            server.wait(30)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
