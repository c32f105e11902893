"""CONTROL-PLANE BENCHMARK (no audio is transcribed): how many uploads a second the sensor, the daemon and
the Postgres instance register as batches and launch as runs, with a backlog that stays flat.

The real pieces: the landing folder, the real `landing_sensor` and the other sensors run by a real
`dagster-daemon` (its sensor daemon and run queue), the production instance configuration
(deploy/dagster.yaml) on a fresh database on the local Postgres. What stands in: the run worker.
On the cluster each run is a Kubernetes Job on a GPU node, not on the control-plane machine, so
runs here are "launched" by benchmarks/standin_launcher.py, which writes the events of a real
`process_batch` run, sleeping `--run-seconds` in place of the model. Uploads are small files of
random bytes written (atomically, by rename) at `--rate` a second under 64 users' folders.

Printed every `--every` seconds: uploads and recordings registered (in a batch with a run) per second,
recordings whose run was launched, batches and runs launched per minute, runs finished, event-log rows
written per second, and the backlog (uploaded, not yet in a launched run); then the landing sensor's
tick p50/p95 and whether the backlog stayed flat.

    python benchmarks/control_plane.py [--rate 50] [--seconds 180] [--batch-files 100] [--run-seconds 20]
"""

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import yaml

REPO = Path(__file__).resolve().parent.parent
DSN = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}

RECORDINGS = """
SELECT coalesce(sum(t.value::int) FILTER (WHERE r.status <> 'QUEUED'), 0),
       coalesce(sum(t.value::int), 0),
       count(*) FILTER (WHERE r.status <> 'QUEUED'),
       count(*),
       count(*) FILTER (WHERE r.status IN ('SUCCESS', 'FAILURE', 'CANCELED'))
FROM runs r JOIN run_tags t ON t.run_id = r.run_id AND t.key = 'diary/recordings'
"""


class Uploader(threading.Thread):
    """Writes `rate` small files a second into the landing folder, each under a temp name first."""

    def __init__(self, landing: Path, rate: float):
        super().__init__(daemon=True)
        self.landing = landing
        self.rate = rate
        self.written = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopped.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while self.written < due:
                folder = self.landing / f"u{self.written % 64:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                temp = folder / f".rec-{self.written:07d}.wav.part"
                temp.write_bytes(secrets.token_bytes(4096))
                temp.rename(folder / f"rec-{self.written:07d}.wav")
                self.written += 1
            self.stopped.wait(0.05)


def _instance_yaml(home: Path, run_seconds: float) -> None:
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    config["run_launcher"] = {"module": "standin_launcher", "class": "StandInRunLauncher", "config": {"run_seconds": run_seconds}}
    config["concurrency"]["runs"]["max_concurrent_runs"] = 500
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def _landing_ticks(instance) -> list[float]:
    from dagster._core.definitions.run_request import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == "landing_sensor":
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100_000)
            return [t.end_timestamp - t.timestamp for t in ticks if t.end_timestamp]
    return []


def _wait_for_first_tick(instance, daemon: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 300
    while not _landing_ticks(instance):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not tick the landing sensor; its log:\n{log.read_text()[-4000:]}")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="uploads a second")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long uploads arrive")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds measured after uploads stop")
    parser.add_argument("--batch-files", type=int, default=100, help="recordings per batch (100 five-minute ones = 600 s of GPU work at 50x)")
    parser.add_argument("--run-seconds", type=float, default=20.0, help="the stand-in run's sleep in place of the model")
    parser.add_argument("--scan-limit", type=int, default=20_000, help="DIARY_LANDING_SCAN_LIMIT: landing entries a tick looks at")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between printed rows")
    args = parser.parse_args()

    database = f"diary_cp_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", **DSN)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    root = Path(tempfile.mkdtemp())
    home, landing = root / "dagster_home", root / "landing"
    home.mkdir()
    landing.mkdir()
    _instance_yaml(home, args.run_seconds)
    env = {
        **os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": DSN["host"], "DAGSTER_PG_PORT": str(DSN["port"]),
        "DAGSTER_PG_DB": database, "DAGSTER_PG_USER": DSN["user"], "DAGSTER_PG_PASSWORD": "trust",
        "DIARY_DATA_DIR": str(root / "data"), "DIARY_LANDING": str(landing),
        "DIARY_BATCH_MAX_FILES": str(args.batch_files), "DIARY_BATCH_MAX_WAIT_SECONDS": "10",
        "DIARY_LANDING_SCAN_LIMIT": str(args.scan_limit),
        "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    os.environ.update(env)
    sys.path[:0] = [str(REPO / "benchmarks"), str(REPO)]
    import dagster as dg

    log = root / "daemon.log"
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "diary_platform.definitions"],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    stored = psycopg2.connect(dbname=database, **DSN)
    stored.autocommit = True
    uploader = Uploader(landing, args.rate)
    try:
        with dg.DagsterInstance.get() as instance:
            _wait_for_first_tick(instance, daemon, log)
            print(f"database {database}; {args.rate:g} uploads/s for {args.seconds:g} s, batches of {args.batch_files}, "
                  f"stand-in runs of {args.run_seconds:g} s, {args.scan_limit} landing entries a tick")
            print(f"{'t':>5} {'uploaded/s':>10} {'registered/s':>12} {'launched/s':>10} {'batches/min':>11} "
                  f"{'runs launched/min':>17} {'runs done':>9} {'events/s':>8} {'backlog':>8}")
            uploader.start()
            started = time.monotonic()
            previous = (0.0, 0, 0, 0, 0, 0, 0)
            backlog_samples = []
            while time.monotonic() - started < args.seconds + args.drain:
                time.sleep(args.every)
                if time.monotonic() - started >= args.seconds:
                    uploader.stopped.set()
                cursor = stored.cursor()
                cursor.execute(RECORDINGS)
                launched, registered, runs_launched, batches, finished = cursor.fetchone()
                cursor.execute("SELECT coalesce(max(id), 0) FROM event_logs")
                events = cursor.fetchone()[0]
                now = time.monotonic() - started
                elapsed = now - previous[0]
                uploaded = uploader.written
                backlog = uploaded - launched
                backlog_samples.append((now, backlog, uploader.stopped.is_set()))
                print(f"{now:>5.0f} {(uploaded - previous[1]) / elapsed:>10.1f} {(registered - previous[2]) / elapsed:>12.1f} "
                      f"{(launched - previous[3]) / elapsed:>10.1f} {(batches - previous[4]) * 60 / elapsed:>11.1f} "
                      f"{(runs_launched - previous[5]) * 60 / elapsed:>17.1f} {finished:>9} {(events - previous[6]) / elapsed:>8.0f} "
                      f"{backlog:>8}", flush=True)
                previous = (now, uploaded, registered, launched, batches, runs_launched, events)
            ticks = _landing_ticks(instance)
            arriving = [b for t, b, stopped in backlog_samples if not stopped]
            half = len(arriving) // 2
            print(f"\nuploaded {uploader.written}; registered {registered}; launched {launched} in {runs_launched} runs "
                  f"({finished} finished); event-log rows {events}")
            print(f"landing_sensor ticks: {len(ticks)}, p50 {statistics.median(ticks):.2f} s, "
                  f"p95 {statistics.quantiles(ticks, n=20, method='inclusive')[-1]:.2f} s, max {max(ticks):.2f} s")
            if half:
                first, second = statistics.mean(arriving[:half]), statistics.mean(arriving[half:])
                verdict = "flat" if second <= first * 1.25 + args.rate * 15 else "growing"
                print(f"backlog while uploads arrived: first half mean {first:.0f}, second half mean {second:.0f} ({verdict}); "
                      f"after {args.drain:g} s of draining: {backlog_samples[-1][1]}")
    finally:
        uploader.stopped.set()
        daemon.terminate()
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        stored.close()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
