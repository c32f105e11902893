"""The production instance (deploy/dagster.yaml) on the local Postgres: two batches at once, events in Postgres.

Postgres at 127.0.0.1:5432 is part of this machine and of CI: there a missing server fails the test,
on a laptop it is a skip with the reason.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg2
import yaml

REPO = Path(__file__).resolve().parent.parent
DIARY = str(Path(sys.executable).parent / "diary")
BATCH_ASSETS = {"raw_audio", "validated_audio", "transcripts", "diary_notes"}


def _instance_env(tmp_path: Path, database: dict) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": database["host"],
        "DAGSTER_PG_PORT": str(database["port"]),
        "DAGSTER_PG_DB": database["dbname"],
        "DAGSTER_PG_USER": database["user"],
        "DAGSTER_PG_PASSWORD": "trust-auth-ignores-it",
        "DIARY_DATA_DIR": str(tmp_path / "data"),
        "DIARY_GPU_SLOTS": "2",
        "DIARY_LLM_SLOTS": "3",
    }


def _query(database: dict, sql: str) -> list[tuple]:
    with psycopg2.connect(**database) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_the_production_instance_config_loads_with_retries_monitoring_and_pools(tmp_path, postgres_database, monkeypatch):
    for name, value in _instance_env(tmp_path, postgres_database).items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert (instance.run_retries_enabled, instance.run_retries_max_retries) == (True, 2)
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 6 * 3600
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"


def test_the_instance_also_takes_one_url_instead_of_parts(tmp_path, postgres_database, monkeypatch):
    """For platforms that hand out a connection URL: the `postgres_db` block swapped for `postgres_url`."""
    env = _instance_env(tmp_path, postgres_database)
    config_path = Path(env["DAGSTER_HOME"]) / "dagster.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["storage"]["postgres"] = {"postgres_url": {"env": "DAGSTER_PG_URL"}}
    config_path.write_text(yaml.safe_dump(config))
    database = postgres_database
    url = f"postgresql+psycopg2://{database['user']}@{database['host']}:{database['port']}/{database['dbname']}"
    for name, value in {**env, "DAGSTER_PG_URL": url}.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_runs_count() == 0
    assert _query(postgres_database, "SELECT count(*) FROM runs") == [(0,)], "the schema was created in that database"


def test_two_batches_materialize_in_parallel_on_postgres(tmp_path, postgres_database, clips):
    env = _instance_env(tmp_path, postgres_database)
    setup = subprocess.run([DIARY, "instance-setup"], env=env, capture_output=True, text=True, timeout=300)
    assert setup.returncode == 0, setup.stderr
    assert "pool gpu: 2 slots" in setup.stderr and "pool llm: 3 slots" in setup.stderr
    assert f"/{postgres_database['dbname']}, schema version" in setup.stderr, "the shared state's tables, in the instance's database"

    # Four recordings each: runs of several seconds, so the two overlap even if one process starts late.
    groups = [[c.path for c in clips[:4]], [c.path for c in clips[4:8]]]
    runs = [
        subprocess.Popen([DIARY, "run", *map(str, files), "--user", user], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for files, user in zip(groups, ("alice", "bob"))
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stderr
        assert "0 quarantined" in stdout

    finished = _query(postgres_database, "SELECT run_id, status, start_time, end_time FROM runs")
    assert len(finished) == 2 and {status for _, status, _, _ in finished} == {"SUCCESS"}
    (_, _, start_a, end_a), (_, _, start_b, end_b) = finished
    assert max(start_a, start_b) < min(end_a, end_b), "the two runs overlapped in time"

    materialized = _query(
        postgres_database,
        "SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'",
    )
    partitions = {partition for _, partition in materialized}
    assert len(partitions) == 2
    assert {(key.strip('[]"'), partition) for key, partition in materialized} == {
        (asset, partition) for asset in BATCH_ASSETS for partition in partitions
    }
    assert _query(postgres_database, "SELECT count(*) FROM dynamic_partitions WHERE partitions_def_name = 'batches'") == [(2,)]
    limits = dict(_query(postgres_database, "SELECT concurrency_key, \"limit\" FROM concurrency_limits"))
    assert limits == {"gpu": 2, "llm": 3}

    # The shared state (manifests, leases, claims) went to the instance's Postgres, none of it to the data folder.
    assert {key for (key,) in _query(postgres_database, "SELECT batch_key FROM diary_batches")} == partitions
    assert {key for (key,) in _query(postgres_database, "SELECT batch_key FROM diary_batch_leases")} == partitions
    claimed = _query(postgres_database, "SELECT batch_key, count(*) FROM diary_content_claims GROUP BY batch_key")
    assert {key for key, _ in claimed} == partitions and sum(count for _, count in claimed) == 8
    assert _query(postgres_database, "SELECT count(*) FROM diary_taken_files") == [(0,)], "files the CLI hands over are not landing files"
    data_dir = tmp_path / "data"
    assert [name for name in ("batches", "claims", "state") if (data_dir / name).exists()] == []
