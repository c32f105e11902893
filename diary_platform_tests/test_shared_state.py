"""The shared control state under many processes at once, on both backends: files in the data folder and
Postgres (the instance's database on a cluster).

Every race is run by eight worker processes released together by a barrier, each with its own connection
pool; the Postgres cases need the local server (see conftest's `postgres_database`).
"""

import multiprocessing
import shutil
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import psycopg2
import pybreaker
import pytest
from typer.testing import CliRunner

from diary_platform.domain import state_database as state_db
from diary_platform.domain.ingest.batches import BatchItem, BatchManifest, Lease, new_batch_key
from diary_platform.domain.ingest.claims import LandingFileKey, Owner
from diary_platform.domain.notes.breakers import breaker_for
from diary_platform.domain.notes.note_batches import COLLECTED, ENDED, OPEN, SUBMITTING, NoteBatch
from diary_platform.domain.shared_state import SharedState, open_shared_state
from diary_platform.resources import shared_state_url

REPO = Path(__file__).resolve().parent.parent
WORKERS = 8
SHA = "ab" * 32
GONE = Owner("gone", "elsewhere", "", 1, 1)
_barrier = None


def _start_together(barrier) -> None:
    global _barrier
    _barrier = barrier


@pytest.fixture(scope="module")
def workers():
    """Eight forked processes; each task waits at the barrier, so eight tasks run in eight processes at once."""
    context = multiprocessing.get_context("fork")
    pool = context.Pool(WORKERS, initializer=_start_together, initargs=(context.Barrier(WORKERS, timeout=30),))
    yield pool
    pool.terminate()
    pool.join()


def _url(database: dict) -> str:
    return f"postgresql://{database['user']}@{database['host']}:{database['port']}/{database['dbname']}"


@pytest.fixture(params=["files", "postgres"])
def where(request, tmp_path) -> tuple[Path, str | None]:
    """(data folder, database URL) of a fresh shared state: no URL means files."""
    if request.param == "files":
        return tmp_path, None
    return tmp_path, _url(request.getfixturevalue("postgres_database"))


def _race(workers, where, task, *args) -> list:
    return workers.map(_run, [(where, task, index, args) for index in range(WORKERS)], chunksize=1)


def _run(job):
    (data_dir, url), task, index, args = job
    state = open_shared_state(data_dir, url)
    _barrier.wait()
    return task(state, index, *args)


def _owner(index: int) -> Owner:
    return Owner("worker", "here", "", 1000 + index, index)


def _claim(state: SharedState, index: int) -> bool:
    won = state.claims.claim_content(SHA, f"batch-{index}", f"upload-{index}.wav", _owner(index))
    state.claims.mark_file_taken(LandingFileKey("alice", "same.wav", 1, 1), SHA, f"batch-{index}")
    return won


def test_many_processes_claim_the_same_content_and_exactly_one_wins(workers, where):
    won = _race(workers, where, _claim)
    assert won.count(True) == 1
    claims = open_shared_state(*where).claims
    winner = won.index(True)
    claim = claims.content_claim(SHA)
    assert (claim.batch_key, claim.source, claim.owner) == (f"batch-{winner}", f"upload-{winner}.wav", _owner(winner))
    assert claims.content_batch(SHA) == f"batch-{winner}" and claims.content_batch("cd" * 32) is None
    taken, rewritten = LandingFileKey("alice", "same.wav", 1, 1), LandingFileKey("alice", "same.wav", 1, 2)
    assert claims.taken_files([taken, rewritten]) == {taken}, "the same path with new bytes is a new file"


def _claim_batch(state: SharedState, index: int) -> set[str]:
    """A batch's worth of contents, claimed in one call, overlapping every other worker's batch."""
    contents = [(f"{n:064x}", f"upload-{n}.wav") for n in range(index * 10, index * 10 + 40)]
    won = state.claims.claim_contents(contents, f"batch-{index}", _owner(index))
    state.claims.mark_files_taken([(LandingFileKey("alice", f"upload-{n}.wav", 1, 1), sha, f"batch-{index}") for n, (sha, _) in enumerate(contents)])
    return won


def test_many_processes_claim_overlapping_batches_at_once_and_each_content_has_one_winner(workers, where):
    won = _race(workers, where, _claim_batch)
    everything = {f"{n:064x}" for n in range(WORKERS * 10 + 30)}
    assert set().union(*won) == everything and sum(len(w) for w in won) == len(everything), "each content won once"
    claims = open_shared_state(*where).claims
    held = claims.content_claims(everything | {"cd" * 32})
    assert set(held) == everything
    assert all(held[sha].batch_key == f"batch-{index}" for index, shas in enumerate(won) for sha in shas)
    files = [LandingFileKey("alice", f"upload-{n}.wav", 1, 1) for n in range(40)]
    assert claims.taken_files(files + [LandingFileKey("bob", "upload-0.wav", 1, 1)]) == set(files)


def _reclaim(state: SharedState, index: int) -> bool:
    return state.claims.reclaim_content(SHA, "gave-up", f"batch-{index}", "stored", _owner(index))


def test_many_processes_move_a_claim_from_a_batch_that_gave_up_and_exactly_one_does(workers, where):
    claims = open_shared_state(*where).claims
    assert claims.claim_content(SHA, "gave-up", "upload.wav")
    moved = _race(workers, where, _reclaim)
    assert moved.count(True) == 1
    assert claims.content_batch(SHA) == f"batch-{moved.index(True)}"
    assert not claims.reclaim_content(SHA, "gave-up", "late", "stored", GONE), "only from the batch it is in"


def _spend(state: SharedState, index: int, day) -> None:
    for _ in range(10):
        state.spend.add("alice", day, 0.125)
    state.spend.add(f"user-{index}", day, 0.5)


def test_spend_booked_by_many_processes_adds_up_exactly(workers, where):
    day = datetime(2026, 11, 29).date()
    _race(workers, where, _spend, day)
    spend = open_shared_state(*where).spend
    assert spend.spent("alice", day) == WORKERS * 10 * 0.125
    assert [spend.spent(f"user-{i}", day) for i in range(WORKERS)] == [0.5] * WORKERS
    assert spend.spent("alice", day + timedelta(days=1)) == 0.0


def _count_failures(state: SharedState, index: int) -> None:
    storage = state.breaker_storage("counted")
    for _ in range(5):
        storage.increment_counter()
        storage.increment_success_counter()


def _fail(state: SharedState, index: int) -> str:
    breaker = breaker_for(state.breaker_storage("openai"), fail_max=WORKERS, reset_seconds=60, exclude=[])
    try:
        breaker.call(_unavailable)
    except pybreaker.CircuitBreakerError:
        return "skipped"
    except ConnectionError:
        return "failed"
    return "called"


def _unavailable():
    raise ConnectionError("503")


def test_breaker_counters_count_every_process_and_an_opened_breaker_is_open_for_all(workers, where):
    _race(workers, where, _count_failures)
    state = open_shared_state(*where)
    counted = state.breaker_storage("counted")
    assert (counted.counter, counted.success_counter) == (WORKERS * 5, WORKERS * 5)
    counted.reset_counter()
    assert (counted.counter, counted.success_counter) == (0, WORKERS * 5)

    assert _race(workers, where, _fail) == ["failed"] * WORKERS, "no failure lost: the eighth one trips it"
    breaker = breaker_for(state.breaker_storage("openai"), fail_max=WORKERS, reset_seconds=60, exclude=[])
    assert breaker.current_state == pybreaker.STATE_OPEN
    assert datetime.now(timezone.utc) - state.breaker_storage("openai").opened_at < timedelta(minutes=1)
    assert _race(workers, where, _fail) == ["skipped"] * WORKERS, "every other process sees it open"
    assert breaker_for(state.breaker_storage("anthropic"), 1, 60, []).current_state == pybreaker.STATE_CLOSED


def _manifest(created: datetime, items: int = 1) -> BatchManifest:
    return BatchManifest(
        new_batch_key(created), created.isoformat(),
        tuple(BatchItem("alice", f"/landing/a{i}.wav", f"alice/a{i}.wav", 10 + i, 5, f"{i:02d}" * 32) for i in range(items)),
        _owner(0),
    )


def _held_unless_gone(lease: Lease) -> bool:
    return lease.owner != GONE


def _take(state: SharedState, index: int, keys: list[str]) -> list[bool]:
    now = datetime.now(timezone.utc)
    return [state.batches.take_lease(key, _owner(index), now, _held_unless_gone) for key in keys]


def test_many_processes_take_a_lease_and_exactly_one_holds_it(workers, where):
    batches = open_shared_state(*where).batches
    now = datetime.now(timezone.utc)
    abandoned, unleased = _manifest(now), _manifest(now)
    for manifest in (abandoned, unleased):
        batches.write(manifest)
    batches.write_lease(abandoned.key, GONE, now - timedelta(hours=1))
    taken = _race(workers, where, _take, [abandoned.key, unleased.key])
    for column, key in enumerate((abandoned.key, unleased.key)):
        won = [row[column] for row in taken]
        assert won.count(True) == 1, key
        assert batches.lease(key).owner == _owner(won.index(True))
    holder = batches.lease(abandoned.key)
    assert holder.since > now - timedelta(minutes=1)
    assert batches.take_lease(abandoned.key, holder.owner, now, _held_unless_gone), "its holder takes it again"


def _read_batches(state: SharedState, index: int, keys: list[str], first: datetime, last: datetime):
    return [state.batches.read(key) for key in keys], state.batches.keys_between(first, last), state.batches.gave_up_keys()


def test_manifests_written_by_one_process_are_read_by_the_others(workers, where):
    batches = open_shared_state(*where).batches
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)
    made = [_manifest(now - timedelta(days=2), 2), _manifest(now - timedelta(hours=1), 3), _manifest(now), _manifest(now + timedelta(days=1))]
    for manifest in reversed(made):
        batches.write(manifest)
    batches.write(BatchManifest(made[0].key, made[0].created_at, made[0].items[:1], made[0].owner))
    batches.give_up(made[1].key, 3, "transcripts: out of memory", now)
    keys = [m.key for m in made]
    seen = _race(workers, where, _read_batches, keys, now - timedelta(days=2, microseconds=1), now)
    expected = [BatchManifest(made[0].key, made[0].created_at, made[0].items[:1], made[0].owner), *made[1:]]
    assert seen == [(expected, keys[:3], [made[1].key])] * WORKERS, "rewritten in place, oldest first, up to `last`"
    assert batches.keys_between(now - timedelta(hours=1), now + timedelta(days=1)) == keys[1:]
    assert batches.gave_up(made[1].key)["attempts"] == 3 and batches.gave_up(made[1].key)["last_error"].endswith("memory")
    assert batches.gave_up(made[0].key) is None

    batches.write_lease(made[2].key, _owner(1), now)
    batches.delete(made[2].key)
    assert not batches.exists(made[2].key) and batches.exists(made[3].key) and batches.lease(made[2].key) is None
    assert not batches.exists("not-a-batch-key")
    with pytest.raises(FileNotFoundError, match="no manifest"):
        batches.read(made[2].key)


def _migrate(state: SharedState, index: int, url: str) -> int:
    return state_db.StateDatabase(url).migrate()


def _tables(database: dict) -> dict[str, list]:
    with psycopg2.connect(**database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT version FROM diary_schema_version ORDER BY version")
        versions = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'diary_breakers' ORDER BY ordinal_position")
        return {"versions": versions, "breaker_columns": [row[0] for row in cursor.fetchall()]}


def _record_batch(state: SharedState, index: int) -> str:
    """Every worker records the same provider batch (as many step retries would); the record they all get back."""
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    mine = NoteBatch("nb-same", "batch-1", "openai", "gpt-4o-mini", ["r1", "r2"], now, now, remote_id=None, outcome=f"worker-{index}")
    return state.note_batches.create(mine).outcome


def test_provider_batch_records_are_made_once_and_a_collected_one_stays_collected(workers, where):
    outcomes = _race(workers, where, _record_batch)
    assert len(set(outcomes)) == 1, "every process got the one record that was stored"
    batches = open_shared_state(*where).note_batches
    record = batches.get("nb-same")
    assert record.status == SUBMITTING and record.recording_ids == ["r1", "r2"] and batches.get("nb-other") is None
    later = record.next_poll_at + timedelta(minutes=5)
    batches.save(replace(record, status=OPEN, remote_id="batch_1"))
    batches.create(replace(record, id="nb-later", status=OPEN, next_poll_at=later))
    batches.create(replace(record, id="nb-done", status=COLLECTED))
    assert [r.id for r in batches.due(later, 10)] == ["nb-same", "nb-later"], "the most overdue first; collected never"
    assert [r.id for r in batches.due(record.next_poll_at, 10)] == ["nb-same"]
    batches.save(replace(batches.get("nb-same"), status=COLLECTED))
    batches.save(replace(batches.get("nb-same"), status=ENDED, remote_id="batch_2"))
    assert (batches.get("nb-same").status, batches.get("nb-same").remote_id) == (COLLECTED, "batch_1"), "a late poll never reopens it"


def test_migrations_run_once_in_order_however_many_processes_start_together(workers, tmp_path, postgres_database, monkeypatch):
    url = _url(postgres_database)
    assert _race(workers, (tmp_path, None), _migrate, url) == [len(state_db.MIGRATIONS)] * WORKERS
    assert _tables(postgres_database)["versions"] == list(range(1, len(state_db.MIGRATIONS) + 1))

    later = (*state_db.MIGRATIONS, ("ALTER TABLE diary_breakers ADD COLUMN IF NOT EXISTS last_failure text",))
    monkeypatch.setattr(state_db, "MIGRATIONS", later)
    database = state_db.StateDatabase(url)
    assert database.migrate() == database.migrate() == len(later)
    tables = _tables(postgres_database)
    assert tables["versions"] == list(range(1, len(later) + 1)) and tables["breaker_columns"][-1] == "last_failure"


def test_instance_setup_creates_the_tables_of_a_postgres_instance_whose_sensor_then_keeps_its_state_there(tmp_path, postgres_database, monkeypatch):
    from diary_platform.batch.landing_sensor import landing_sensor
    from diary_platform.cli import app
    from diary_platform.definitions import build_resources
    from diary_platform.settings import Settings

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    database = postgres_database
    env = {
        "DAGSTER_HOME": str(home), "DIARY_DATA_DIR": str(tmp_path / "data"), "DAGSTER_PG_HOST": database["host"],
        "DAGSTER_PG_PORT": str(database["port"]), "DAGSTER_PG_DB": database["dbname"], "DAGSTER_PG_USER": database["user"],
        "DAGSTER_PG_PASSWORD": "trust-auth-ignores-it", "DIARY_BATCH_MAX_WAIT_SECONDS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for _ in range(2):
        result = CliRunner().invoke(app, ["instance-setup"])
        assert result.exit_code == 0, result.output
        assert f"/{database['dbname']}, schema version {len(state_db.MIGRATIONS)}" in result.output
    assert _tables(database)["versions"] == list(range(1, len(state_db.MIGRATIONS) + 1))

    settings = Settings()
    upload = settings.landing_dir / "alice" / "memo.wav"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"not audio, but content all the same")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        derived = shared_state_url("", instance)
        assert derived.startswith("postgresql+psycopg2://") and derived.endswith(f"/{database['dbname']}")
        assert shared_state_url("postgresql://elsewhere/state", instance) == "postgresql://elsewhere/state"
        cursor = None
        for _ in range(2):  # the first tick sees the upload settling, the second takes it
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources(settings)) as context:
                tick = landing_sensor(context)
            cursor = tick.cursor
        [request] = tick.run_requests
    with psycopg2.connect(**database) as connection, connection.cursor() as rows:
        rows.execute("SELECT batch_key FROM diary_batches UNION ALL SELECT batch_key FROM diary_content_claims"
                     " UNION ALL SELECT batch_key FROM diary_taken_files UNION ALL SELECT batch_key FROM diary_batch_leases")
        assert rows.fetchall() == [(request.partition_key,)] * 4
    assert [path.name for path in settings.data_dir.iterdir()] == ["landing"], "nothing of the state in the data folder"

    with dg.DagsterInstance.ephemeral() as local:
        assert shared_state_url("", local) is None, "an instance without Postgres keeps the state in files"
    assert shared_state_url("", None) is None
