"""The landing sensor: settled files only, never twice, content once, batch limits, bounded ticks."""

import os
import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from diary_platform.domain import stages
from diary_platform.domain.ingest.batches import FileBatchStore
from diary_platform.domain.ingest.claims import FileClaims, Owner
from diary_platform.domain.ingest.landing import BatchLimits, Intake, LandingCursor, LandingScanner
from diary_platform.domain.ingest.recovery import BatchRuns, BatchState, Recovery
from diary_platform.domain.store.layout import DataStore
from diary_platform.definitions import build_resources
from diary_platform.batch.landing_sensor import landing_sensor

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


class Landing:
    """A landing folder, a scanner over it and a cursor carried from tick to tick."""

    def __init__(self, root, **limits):
        self.root = root / "landing"
        self.root.mkdir()
        self.store = FileBatchStore(root / "batches")
        self.claims = FileClaims(root / "claims")
        self.states: dict[str, BatchState] = {}  # what became of each batch; running unless a test says otherwise
        self.intake = Intake(self.store, self.claims, Owner.this_process("sensor"), lambda key: self.states.get(key, BatchState.RUNNING))
        self.scanner = LandingScanner(self.root, self.intake, BatchLimits(**limits))
        self.batches: list[str] = []
        self.cursor = LandingCursor()
        self.now = T0

    def write(self, relative_path: str, content: bytes):
        path = self.root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def tick(self, advance_seconds: float = 15):
        self.now += timedelta(seconds=advance_seconds)
        result = self.scanner.tick(self.cursor, self.now)
        self.cursor = LandingCursor.from_json(result.cursor.to_json())
        self.batches += [b.key for b in result.batches]
        return result

    def taken(self, result):
        return sorted(item.relative_path for batch in result.batches for item in batch.items)


@pytest.fixture
def landing(tmp_path):
    return Landing(tmp_path, max_wait_seconds=0)


def test_a_file_is_taken_only_once_it_has_settled(landing):
    upload = landing.write("alice/memo.m4a", b"first half")
    assert landing.taken(landing.tick()) == []
    with open(upload, "ab") as handle:
        handle.write(b" and the second half")
    assert landing.taken(landing.tick()) == [], "it grew since the last tick: still being written"
    assert landing.taken(landing.tick()) == ["alice/memo.m4a"]
    item = landing.store.read(landing.batches[-1]).items[0]
    assert item.user == "alice" and item.size == len(b"first half and the second half")


def test_temporary_and_hidden_upload_names_are_ignored(landing):
    landing.write("alice/.memo.m4a", b"a")
    landing.write("alice/memo.m4a.part", b"b")
    landing.tick()
    assert landing.taken(landing.tick()) == []


def test_a_file_seen_once_is_never_taken_again(landing):
    landing.write("bob/one.wav", b"one")
    landing.tick()
    assert landing.taken(landing.tick()) == ["bob/one.wav"]
    for _ in range(3):
        assert landing.taken(landing.tick()) == []
    fresh = Landing.__new__(Landing)
    fresh.__dict__.update(landing.__dict__, cursor=LandingCursor())
    fresh.tick()
    assert fresh.taken(fresh.tick()) == [], "the claims remembers even when the cursor is lost"


def test_the_same_content_under_two_names_is_ingested_once(landing):
    landing.write("alice/a.ogg", b"same bytes")
    landing.write("alice/copy of a.ogg", b"same bytes")
    landing.tick()
    result = landing.tick()
    assert len(landing.taken(result)) == 1
    assert result.duplicates == 1
    landing.write("carol/again.ogg", b"same bytes")
    landing.tick()
    assert landing.taken(landing.tick()) == []


def test_files_directly_in_the_landing_root_belong_to_the_default_user(landing):
    landing.write("loose.flac", b"x")
    landing.tick()
    landing.tick()
    assert landing.store.read(landing.batches[-1]).items[0].user == "default"


def test_batches_respect_the_file_limit(tmp_path):
    landing = Landing(tmp_path, max_files=2, max_wait_seconds=0)
    for index in range(5):
        landing.write(f"alice/{index}.wav", bytes([index]) * 10)
    landing.tick()
    batches = landing.tick().batches
    assert [len(b.items) for b in batches] == [2, 2, 1]
    assert len({b.key for b in batches}) == 3
    assert all("," not in b.key and "/" not in b.key for b in batches)


def test_batches_respect_the_byte_limit(tmp_path):
    landing = Landing(tmp_path, max_bytes=250, max_wait_seconds=0)
    for index in range(4):
        landing.write(f"alice/{index}.wav", bytes([index]) * 100)
    landing.tick()
    assert [len(b.items) for b in landing.tick().batches] == [2, 2]


def test_while_uploads_settle_a_partial_batch_waits_until_its_oldest_file_has_waited_long_enough(tmp_path):
    landing = Landing(tmp_path, max_files=10, max_wait_seconds=60)
    landing.write("alice/a.wav", b"a")
    growing = landing.write("alice/growing.wav", b"g")

    def tick(seconds):
        with growing.open("ab") as upload:  # an upload still being written: the folder is not idle
            upload.write(b"g")
        return landing.tick(seconds).batches

    landing.tick()
    assert tick(15) == [] and len(landing.cursor.waiting) == 1
    landing.write("alice/b.wav", b"b")
    assert tick(15) == [] and tick(15) == []
    closed = tick(30)
    assert [sorted(i.relative_path for i in b.items) for b in closed] == [["alice/a.wav", "alice/b.wav"]]
    assert "alice/growing.wav" in landing.cursor.pending


def test_a_lone_upload_closes_its_batch_as_soon_as_it_has_settled(tmp_path):
    landing = Landing(tmp_path, max_files=10, max_wait_seconds=60)
    landing.write("bob/memo.wav", b"memo")
    assert landing.tick(5).batches == []
    assert landing.taken(landing.tick(5)) == ["bob/memo.wav"]


def test_a_full_batch_closes_without_waiting(tmp_path):
    landing = Landing(tmp_path, max_files=2, max_wait_seconds=3600)
    landing.write("alice/a.wav", b"a")
    landing.write("alice/b.wav", b"b")
    landing.write("alice/c.wav", b"c")
    landing.tick()
    landing.write("alice/d.wav", b"still being written")
    assert [len(b.items) for b in landing.tick().batches] == [2]
    assert len(landing.cursor.waiting) == 1


@pytest.mark.slow
def test_thousands_of_files_give_bounded_ticks_and_all_get_taken(tmp_path):
    landing = Landing(tmp_path, max_files=500, max_files_scanned=1000, max_wait_seconds=0)
    for index in range(3000):
        landing.write(f"user{index % 3}/{index:05d}.wav", f"recording {index}".encode())
    taken = []
    ticks = 0
    while len(taken) < 3000 and ticks < 20:
        started = time.perf_counter()
        result = landing.tick()
        elapsed = time.perf_counter() - started
        ticks += 1
        assert result.files_scanned <= 1000
        assert len(landing.cursor.pending) <= 3000
        assert elapsed < 10
        taken += landing.taken(result)
    assert len(taken) == len(set(taken)) == 3000
    assert len(landing.cursor.to_json()) < 1_000_000
    for _ in range(3):
        assert landing.taken(landing.tick()) == []


def test_a_resumed_scan_neither_skips_nor_repeats_files_whatever_their_names(tmp_path):
    landing = Landing(tmp_path, max_files=100, max_files_scanned=2, max_wait_seconds=0)
    names = ["a-b.wav", "a/x.wav", "a/y.wav", "a.wav", "b/c/d.wav", "b/c-d.wav", "Z é.wav", "b0.wav"]
    for index, name in enumerate(names):
        landing.write(f"alice/{name}", bytes([index]) * 4)
    taken = []
    for _ in range(12):
        taken += landing.taken(landing.tick())
    assert sorted(taken) == sorted(f"alice/{name}" for name in names)


def test_a_batch_written_by_a_tick_that_died_is_resumed_once_the_sensors_lease_lapses(landing):
    landing.write("alice/a.wav", b"a")
    landing.tick()
    lost_cursor = landing.cursor
    [written] = landing.tick().batches
    landing.cursor = lost_cursor  # the tick died: Dagster never got its cursor, partition or run request
    assert landing.tick().batches == [], "the file is claimed: it is not taken twice"
    recovery = Recovery(landing.store, lambda key: BatchRuns(done=False, live=False, failures=0, last_error=None))
    assert recovery.state(written.key, landing.now) is BatchState.RUNNING, "within the sensor's grace"
    later = landing.now + timedelta(minutes=3)
    assert [(m.key, m.items) for m, _ in recovery.stranded(T0, later)] == [(written.key, written.items)]


def test_symlinks_in_the_landing_folder_are_not_followed(landing, tmp_path):
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"not yours")
    (landing.root / "alice").mkdir()
    os.symlink(outside, landing.root / "alice" / "link.wav")
    landing.tick()
    assert landing.taken(landing.tick()) == []


def test_the_dagster_sensor_adds_partitions_and_one_run_per_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIARY_LANDING", str(tmp_path / "landing"))
    monkeypatch.setenv("DIARY_BATCH_MAX_WAIT_SECONDS", "0")
    monkeypatch.setenv("DIARY_BATCH_MAX_FILES", "2")
    from diary_platform.settings import Settings

    settings = Settings()
    for index in range(3):
        path = settings.landing_dir / "alice" / f"{index}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([index]) * 8)
    resources = build_resources(settings)
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = landing_sensor(context)
        assert first.run_requests == [] and first.dynamic_partitions_requests == []
        assert first.skip_reason.skip_message.startswith("scanned 3 files: 3 settling, 0 waiting for a batch"), "the tick says why"
        with dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources) as context:
            second = landing_sensor(context)
        keys = [r.partition_key for r in second.run_requests]
        assert len(keys) == 2
        assert [r.run_key for r in second.run_requests] == keys
        assert [(r.tags["diary/source"], r.tags["diary/users"], r.tags["diary/batch"]) for r in second.run_requests] == [
            ("sensor", "alice", key) for key in keys]
        assert [list(r.partition_keys) for r in second.dynamic_partitions_requests] == [keys]
        instance.add_dynamic_partitions("batches", keys)
        with dg.build_sensor_context(instance=instance, cursor=second.cursor, resources=resources) as context:
            third = landing_sensor(context)
        assert third.run_requests == []


def test_a_symlinked_folder_pointing_outside_the_landing_root_is_refused(landing, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.wav").write_bytes(b"private")
    os.symlink(outside, landing.root / "mallory")
    landing.write("alice/fine name é.wav", b"ok")
    landing.tick()
    result = landing.tick()
    assert landing.taken(result) == ["alice/fine name é.wav"]
    assert result.skips.counts == {"symlink": 1}


def test_an_upload_rewritten_after_it_was_batched_is_quarantined_then_taken_again_as_new(landing, tmp_path):
    upload = landing.write("alice/memo.m4a", b"first take")
    landing.tick()
    [batch] = landing.tick().batches
    upload.write_bytes(b"second take, recorded over the first")
    store = DataStore(tmp_path / "data")
    [row] = stages.ingest(batch, store).to_dicts()
    assert (row["status"], row["reason"]) == ("quarantined", "source_changed")
    assert "changed after it was picked up" in row["message"] and row["original_uri"] is None
    assert list(store.objects.scan("audio/")) == []
    landing.tick()
    again = landing.tick()
    assert landing.taken(again) == ["alice/memo.m4a"]
    [item] = again.batches[0].items
    assert item.size == len(b"second take, recorded over the first")
