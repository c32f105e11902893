"""Fast unit tests of the domain modules a silent regression would hurt most (and that mutation testing runs)."""

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pybreaker
import pytest

from diary_platform.domain.ingest.batches import BatchItem, BatchManifest, FileBatchStore, Lease
from diary_platform.domain.ingest.batching import take_chunk
from diary_platform.domain.ingest.claims import FileClaims, LandingFileKey, Owner
from diary_platform.domain.ingest.landing import (
    BatchLimits, Intake, LandingCursor, LandingScanner, Skipped, Skips, Waiting, batch_files, check_name, printable,
    read_upload,
)
from diary_platform.domain.ingest.recovery import FOREIGN_LEASE, SENSOR_GRACE, BatchRuns, BatchState, Recovery, lease_held
from diary_platform.domain.notes.breakers import FileBreakerStorage, breaker_for
from diary_platform.domain.notes.spend import FileDailySpend, TokenUsage, call_cost, load_prices
from diary_platform.domain.speech.guards import GuardConfig, apply_guards, has_repetition_loop
from diary_platform.domain.speech.transcription import Segment
from diary_platform.domain.store.hashing import NotARegularFile, recording_id_for, sha256_file, sha256_upload
from diary_platform.domain.store.layout import DataStore, asset_of


def test_guards_catch_a_repetition_loop_and_silence_hallucinations():
    def segment(text, start, **scores):
        values = {"avg_logprob": -0.3, "no_speech_prob": 0.1, "compression_ratio": 1.3, **scores}
        return Segment(start=start, end=start + 2, text=text, **values)

    segments = [
        segment("I went to the shop.", 0),
        segment("Thank you. Thank you. Thank you. Thank you. Thank you.", 2),
        segment("and then and then and then and then and then and then", 4, compression_ratio=3.1),
        segment("Subscribe to my channel!", 6, no_speech_prob=0.9, avg_logprob=-1.4),
        segment("It was raining.", 8),
        segment("It was raining.", 10),
    ]
    kept, dropped = apply_guards(segments, GuardConfig())
    assert [s.text for s in kept] == ["I went to the shop.", "It was raining."]
    assert [d.guard for d in dropped] == ["repetition_loop", "compression_ratio", "silence", "repeated_segment"]
    assert not has_repetition_loop("we had a very very good day", 3, 6)
    assert has_repetition_loop("no no no no", 3, 6)


# --- guards -------------------------------------------------------------------------------------------------


def _segment(text="words", compression=1.3, no_speech=0.1, logprob=-0.3):
    return Segment(start=0.0, end=1.0, text=text, avg_logprob=logprob, no_speech_prob=no_speech, compression_ratio=compression)


def test_each_guard_triggers_just_past_its_threshold_and_not_at_it():
    config = GuardConfig()
    assert apply_guards([_segment(compression=2.4)], config)[1] == []
    assert [d.guard for d in apply_guards([_segment(compression=2.41)], config)[1]] == ["compression_ratio"]
    assert apply_guards([_segment(no_speech=0.6, logprob=-1.1)], config)[1] == []
    assert apply_guards([_segment(no_speech=0.61, logprob=-1.0)], config)[1] == []
    assert [d.guard for d in apply_guards([_segment(no_speech=0.61, logprob=-1.01)], config)[1]] == ["silence"]
    dropped = apply_guards([_segment("a b"), _segment("A, b!")], config)[1]
    assert [(d.guard, d.text, d.start, d.end) for d in dropped] == [("repeated_segment", "A, b!", 0.0, 1.0)]
    assert apply_guards([_segment(""), _segment("")], config)[1] == [], "empty segments are not repeats"


def test_a_repetition_loop_is_more_than_max_repeats_of_a_phrase_of_up_to_max_words():
    assert not has_repetition_loop("go go go", 3, 6) and has_repetition_loop("go go go go", 3, 6)
    assert has_repetition_loop("one two three one two three one two three one two three", 3, 6)
    six = "a b c d e f "
    assert has_repetition_loop(six * 4, 3, 6) and not has_repetition_loop(six * 4, 3, 5)
    assert not has_repetition_loop("x y " * 4, 4, 6) and has_repetition_loop("x y " * 5, 4, 6)
    assert has_repetition_loop("It's it's it's it's", 3, 1)


# --- spend --------------------------------------------------------------------------------------------------


def test_a_call_costs_tokens_times_the_list_price_per_million(tmp_path):
    prices = {"m": {"input": 0.15, "output": 0.60}}
    assert call_cost(prices, "m", TokenUsage(2_000_000, 500_000)) == pytest.approx(0.6)
    assert call_cost(prices, "m", TokenUsage(1, 0)) == pytest.approx(0.15e-6)
    assert call_cost(prices, "unknown", TokenUsage(10**9, 10**9)) == 0.0
    assert call_cost(prices, "m", TokenUsage(2_000_000, 500_000, cached_input_tokens=10**6, batch=True)) == pytest.approx(0.6), (
        "a model without cached or batch prices: cached input and batches at the list price")
    own = tmp_path / "prices.yaml"
    own.write_text("m: {input: 1.0, output: 2.0}\n")
    assert load_prices(own) == {"m": {"input": 1.0, "output": 2.0}}
    assert load_prices()["gpt-4o-mini"]["input"] > 0
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_prices(empty) == {}


def test_spend_adds_up_per_user_and_day_across_processes(tmp_path):
    day = date(2026, 11, 26)
    spend = FileDailySpend(tmp_path)
    assert spend.spent("alice", day) == 0.0
    spend.add("alice", day, 0.25)
    FileDailySpend(tmp_path).add("alice", day, 0.5)
    spend.add("bob", day, 1.0)
    spend.add("alice", day + timedelta(days=1), 2.0)
    assert spend.spent("alice", day) == pytest.approx(0.75) and spend.spent("bob", day) == 1.0
    assert spend.spent("alice", day + timedelta(days=1)) == 2.0
    assert (tmp_path / "spend" / "2026-11-26" / "alice.json").exists()


# --- breakers -----------------------------------------------------------------------------------------------


def test_a_breaker_opens_after_fail_max_counted_failures_and_ignores_excluded_errors(tmp_path):
    class Counted(Exception):
        pass

    class Ignored(Exception):
        pass

    breaker = breaker_for(FileBreakerStorage(tmp_path / "breakers" / "p.json"), fail_max=2, reset_seconds=60, exclude=[lambda error: isinstance(error, Ignored)])
    assert breaker.name == "p" and breaker.fail_max == 2 and breaker.reset_timeout == 60

    def fail(error):
        raise error

    for _ in range(3):
        with pytest.raises(Ignored):
            breaker.call(fail, Ignored())
    assert breaker.current_state == "closed"
    with pytest.raises(Counted):
        breaker.call(fail, Counted())
    with pytest.raises(Counted):
        breaker.call(fail, Counted())
    assert breaker.current_state == "open", "the failure that trips it is raised as itself"
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: "never called")
    shared = breaker_for(FileBreakerStorage(tmp_path / "breakers" / "p.json"), fail_max=2, reset_seconds=60, exclude=[])
    assert shared.current_state == "open", "another process sees the same state"


def test_a_breaker_closes_after_a_successful_trial_and_counts_from_zero_again(tmp_path):
    storage = FileBreakerStorage(tmp_path / "breakers" / "p.json")
    assert (storage.state, storage.counter, storage.success_counter, storage.opened_at) == ("closed", 0, 0, None)
    breaker = breaker_for(FileBreakerStorage(tmp_path / "breakers" / "p.json"), fail_max=1, reset_seconds=30, exclude=[])
    with pytest.raises(ValueError):
        breaker.call(lambda: (_ for _ in ()).throw(ValueError("down")))
    assert storage.state == "open" and storage.opened_at is not None
    storage.opened_at = datetime.now(timezone.utc) - timedelta(seconds=31)
    assert breaker.call(lambda: "up") == "up"
    assert (storage.state, storage.counter) == ("closed", 0)
    storage.increment_success_counter()
    storage.increment_success_counter()
    assert storage.success_counter == 2
    storage.reset_success_counter()
    storage.increment_counter()
    assert (storage.success_counter, storage.counter) == (0, 1)
    storage.reset_counter()
    assert storage.counter == 0


# --- hashing and the store's layout -----------------------------------------------------------------------


def test_an_upload_is_hashed_only_when_it_is_a_regular_file_reached_without_a_link(tmp_path):
    upload = tmp_path / "a.wav"
    upload.write_bytes(b"x" * (3 << 20))
    sha, status = sha256_upload(upload)
    assert sha == hashlib.sha256(upload.read_bytes()).hexdigest() == sha256_file(upload) and status.st_size == 3 << 20
    assert recording_id_for(sha) == sha[:24]
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NotARegularFile):
        sha256_upload(tmp_path / "pipe")
    with pytest.raises(NotARegularFile):
        sha256_upload(tmp_path)
    os.symlink(upload, tmp_path / "link.wav")
    with pytest.raises(OSError) as linked:
        sha256_upload(tmp_path / "link.wav")
    assert linked.value.errno == errno.ELOOP


def test_the_layout_puts_each_kind_of_object_under_its_own_key(tmp_path):
    sha = "ab" + "c" * 62
    assert DataStore.original_key(sha, ".FLAC") == f"audio/original/ab/{sha}.flac"
    assert DataStore.original_key(sha, "") == f"audio/original/ab/{sha}"
    assert DataStore.normalised_key(sha) == f"audio/normalised/ab/{sha}.wav"
    assert DataStore.table_key("transcripts", "b1") == "tables/transcripts/b1.parquet"
    assert DataStore.transcript_key("r1", "srt") == "transcripts/r1.srt" and DataStore.note_key("r1") == "notes/r1.md"
    assert [asset_of(k) for k in ("tables/x/b.parquet", f"audio/original/ab/{sha}", "audio/normalised/a", "transcripts/r",
                                  "notes/r.md", "records/retention/t.json", "elsewhere")] == [
        "x", "raw_audio", "validated_audio", "transcripts", "diary_notes", "records", "other"]
    store = DataStore(tmp_path)
    store.write_table("t", "b2", pl.DataFrame({"a": [1]}))
    store.write_table("t", "b1", pl.DataFrame({"a": [2]}))
    store.objects.write_bytes("tables/t/notes.txt", b"not a table")
    assert store.table_partitions("t") == ["b1", "b2"] and store.read_table("t", "b1")["a"].to_list() == [2]
    assert store.has_table("t", "b1") and not store.has_table("t", "b3")
    written = store.write_text("notes/r.md", "# hi")
    assert store.read_text(written.uri) == "# hi" and store.find_uri(written.uri).size == 4


def test_an_original_is_stored_once_under_its_content_and_a_missing_upload_says_so(tmp_path):
    store = DataStore(tmp_path / "data")
    upload = tmp_path / "memo.M4A"
    upload.write_bytes(b"audio bytes" * 100_000)
    sha = hashlib.sha256(upload.read_bytes()).hexdigest()
    first = store.store_original(upload, sha)
    assert (first.key, first.size, first.new, first.tier) == (DataStore.original_key(sha, ".m4a"), upload.stat().st_size, True, "hot")
    assert store.objects.read_bytes(first.key) == upload.read_bytes()
    upload.unlink()
    again = store.store_original(upload, sha)
    assert (again.key, again.new, again.size) == (first.key, False, first.size), "found by content, the upload not needed"
    with pytest.raises(FileNotFoundError, match="is gone"):
        store.store_original(tmp_path / "other.m4a", "0" * 64)


# --- claims -------------------------------------------------------------------------------------------------


def test_an_owner_is_alive_while_its_process_runs_and_unknown_from_another_machine():
    me = Owner.this_process("cli")
    assert me.pid == os.getpid() and me.alive() is True and me.label() == f"cli pid {os.getpid()} on {me.host}"
    assert Owner("cli", me.host, me.boot_id, me.pid, me.started + 1).alive() is False, "a later process with the same pid"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert Owner("cli", me.host, me.boot_id, int(finished.stdout), 1).alive() is False
    assert Owner("cli", "another-host", me.boot_id, me.pid, me.started).alive() is None
    assert Owner("cli", me.host, "another-boot", me.pid, me.started).alive() is None


def test_content_is_claimed_once_and_moves_only_from_the_batch_named(tmp_path):
    claims = FileClaims(tmp_path)
    me = Owner.this_process("cli")
    assert claims.content_claim("a" * 64) is None and claims.content_batch("a" * 64) is None
    assert claims.claim_content("a" * 64, "b1", "/up/a.wav", me)
    assert not claims.claim_content("a" * 64, "b2", "/up/a.wav", me)
    claim = claims.content_claim("a" * 64)
    assert (claim.batch_key, claim.source, claim.owner, claim.content_sha256) == ("b1", "/up/a.wav", me, "a" * 64)
    assert datetime.fromisoformat(claim.claimed_at).tzinfo is not None
    assert not claims.reclaim_content("a" * 64, "b9", "b3", "/up/a.wav", me), "only from the batch it is in"
    assert claims.reclaim_content("a" * 64, "b1", "b3", "/up/a.wav", me) and claims.content_batch("a" * 64) == "b3"
    assert not claims.reclaim_content("c" * 64, "b1", "b3", "/up/c.wav", me), "nothing to move"
    key = LandingFileKey("alice", "alice/a.wav", 10, 123)
    assert key.digest != LandingFileKey("alice", "alice/a.wav", 11, 123).digest
    assert claims.taken_files([key]) == set()
    claims.mark_file_taken(key, "a" * 64, "b3")
    claims.mark_file_taken(key, "a" * 64, "b4")
    assert claims.taken_files([key]) == {key} and json.loads(claims._marker("files", key.digest).read_text())["batch"] == "b3"


# --- recovery -----------------------------------------------------------------------------------------------


def _item(sha: str, name: str = "a.wav", size: int = 10):
    return BatchItem("alice", f"/up/{name}", f"alice/{name}", size, 1_700_000_000_000_000_000, sha)


def _runs(done=False, live=False, failures=0):
    return BatchRuns(done=done, live=live, failures=failures, last_error="boom" if failures else None)


def _made(tmp_path, owner, at):
    batches = FileBatchStore(tmp_path / "batches")
    intake = Intake(batches, FileClaims(tmp_path / "claims"), owner, lambda key: BatchState.RUNNING)
    return batches, intake.commit([_item("a" * 64)], at)


def test_a_batch_is_done_running_stranded_or_given_up(tmp_path):
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    me = Owner.this_process("cli")
    batches, manifest = _made(tmp_path, replace(me, started=me.started + 1), now)
    state = lambda runs, at=now: Recovery(batches, lambda key: runs).state(manifest.key, at)  # noqa: E731
    assert state(_runs(done=True, live=True)) is BatchState.DONE
    assert state(_runs(live=True)) is BatchState.RUNNING
    assert state(_runs(failures=5)) is BatchState.STRANDED, "a dead owner, no live run"
    batches.take_lease(manifest.key, Owner.this_process("cli"), now, lambda lease: False)
    assert state(_runs()) is BatchState.RUNNING, "a live process holds the lease"
    batches.give_up(manifest.key, 3, "boom", now)
    assert state(_runs(done=True)) is BatchState.GAVE_UP and batches.gave_up(manifest.key)["last_error"] == "boom"
    assert batches.gave_up_keys() == [manifest.key]


def test_leases_of_the_sensor_and_of_other_machines_lapse_after_their_time(tmp_path):
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    me = Owner.this_process("cli")
    sensor = Owner("sensor", me.host, me.boot_id, me.pid, me.started)
    assert lease_held(Lease(sensor, now - SENSOR_GRACE + timedelta(seconds=1)), now)
    assert not lease_held(Lease(sensor, now - SENSOR_GRACE), now)
    remote = Owner("cli", "elsewhere", "", 1, 1)
    assert lease_held(Lease(remote, now - FOREIGN_LEASE + timedelta(seconds=1)), now)
    assert not lease_held(Lease(remote, now - FOREIGN_LEASE), now)
    assert lease_held(Lease(me, now - timedelta(days=30)), now), "a live local process holds it however long"


def test_stranded_batches_are_found_in_their_window_and_given_up_after_max_attempts(tmp_path):
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    dead = Owner("cli", "elsewhere", "", 1, 1)
    batches, first = _made(tmp_path, dead, now - FOREIGN_LEASE - timedelta(hours=1))
    failures = {first.key: 2}
    recovery = Recovery(batches, lambda key: _runs(failures=failures.get(key, 0)), max_attempts=3)
    assert [m.key for m, _ in recovery.stranded(now - timedelta(days=1), now)] == [first.key]
    assert list(recovery.stranded(now - timedelta(minutes=10), now)) == [], "outside the window"
    assert recovery.take(first.key, Owner.this_process("cli"), now)
    assert not recovery.take(first.key, Owner.this_process("recover"), now), "the lease is held by a live process now"
    failures[first.key] = 3
    batches._lease_path(first.key).unlink()
    assert list(recovery.stranded(now - timedelta(days=1), now)) == []
    assert recovery.state(first.key, now) is BatchState.GAVE_UP and batches.gave_up(first.key)["attempts"] == 3


# --- intake (the landing scanner's and the CLI's claims) -------------------------------------------------------


def _intake(tmp_path, states=None, role="cli"):
    states = states if states is not None else {}
    batches = FileBatchStore(tmp_path / "batches")
    return Intake(batches, FileClaims(tmp_path / "claims"), Owner.this_process(role), lambda key: states.get(key, BatchState.RUNNING))


NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


def test_a_batch_keeps_only_the_items_it_won_and_is_not_written_when_it_won_none(tmp_path):
    intake = _intake(tmp_path)
    first = intake.commit([_item("a" * 64, "a.wav"), _item("b" * 64, "b.wav")], NOW)
    assert [i.content_sha256 for i in first.items] == ["a" * 64, "b" * 64] and first.owner == intake.owner
    assert intake.batches.lease(first.key).owner == intake.owner, "the maker holds the lease from the start"
    second = intake.commit([_item("b" * 64, "b2.wav"), _item("c" * 64, "c.wav")], NOW)
    assert [i.content_sha256 for i in second.items] == ["c" * 64]
    assert intake.batches.read(second.key).items == second.items, "the manifest on disk says the same"
    assert intake.commit([_item("a" * 64, "again.wav")], NOW) is None
    assert sorted(p.name for p in intake.batches.root.rglob("*.json")) == sorted([f"{first.key}.json", f"{second.key}.json"])
    assert first.key != second.key and first.key[:16] == second.key[:16] == "120000-20261126-"


def test_a_batch_key_shows_its_time_first_and_its_maker_last_and_keys_order_by_time_across_days(tmp_path):
    from diary_platform.domain.catalog import latest_rows
    from diary_platform.domain.ingest.batches import batch_order, batch_time, new_batch_key

    key = new_batch_key(datetime(2026, 11, 29, 3, 50, 16, 999, tzinfo=timezone.utc))
    assert re.fullmatch(r"035016-20261129-[0-9a-f]{8}", key) and batch_time(key) == datetime(2026, 11, 29, 3, 50, 16, tzinfo=timezone.utc)
    assert batch_time("20261126T120000Z-abc") == datetime(2026, 11, 26, 12, tzinfo=timezone.utc), "keys of the earlier format"
    for not_a_key in ("my-batch", "035016-2026112-ab", "20261129-035016-ab", ""):
        with pytest.raises(ValueError):
            batch_time(not_a_key)
    evening, next_morning = "230000-20261128-ffffffff", "010000-20261129-00000000"
    assert sorted([next_morning, evening], key=batch_order) == [evening, next_morning]
    assert batch_order("20261128T235959Z-x") < batch_order(next_morning), "both formats in one order"
    rows = pl.DataFrame({"recording_id": ["r", "r"], "batch_key": [next_morning, evening], "status": ["new", "old"]})
    assert latest_rows(rows)["status"].to_list() == ["new"]
    batches = FileBatchStore(tmp_path / "batches")
    for made in (evening, next_morning):
        batches.write(BatchManifest(made, "", ()))
    assert batches.keys_between(datetime(2026, 11, 28, 22, tzinfo=timezone.utc), datetime(2026, 11, 29, 2, tzinfo=timezone.utc)) == [
        evening, next_morning]
    assert batches.keys_between(datetime(2026, 11, 28, 23, 0, 0, 500, tzinfo=timezone.utc), datetime(2026, 11, 29, 0, 59, tzinfo=timezone.utc)) == [
        evening], "from the second of `first`, to `last`"


def test_content_of_a_batch_that_gave_up_is_taken_again_and_any_other_stays_where_it_is(tmp_path):
    states = {}
    intake = _intake(tmp_path, states)
    old = intake.commit([_item("a" * 64)], NOW)
    for state in (BatchState.DONE, BatchState.RUNNING, BatchState.STRANDED):
        states[old.key] = state
        assert intake.holder("a" * 64) == (old.key, state)
        assert intake.commit([_item("a" * 64, "again.wav")], NOW) is None
    states[old.key] = BatchState.GAVE_UP
    assert intake.holder("a" * 64) is None and intake.holder("f" * 64) is None
    new = intake.commit([_item("a" * 64, "again.wav")], NOW)
    assert new is not None and intake.claims.content_batch("a" * 64) == new.key
    key = LandingFileKey("alice", "alice/again.wav", 10, 1)
    intake.commit([_item("d" * 64, "again.wav")], NOW, {"/up/again.wav": key})
    assert intake.claims.taken_files([key]) == {key}


def test_a_redrive_moves_content_only_from_batches_that_gave_up(tmp_path):
    states = {}
    intake = _intake(tmp_path, states)
    done = intake.commit([_item("a" * 64)], NOW)
    failed = intake.commit([_item("b" * 64)], NOW)
    states.update({done.key: BatchState.DONE, failed.key: BatchState.GAVE_UP})
    redriven = intake.redrive([_item("a" * 64), _item("b" * 64), _item("c" * 64)], NOW)
    assert len(redriven.items) == 3 and intake.batches.read(redriven.key) == redriven
    assert [intake.claims.content_batch(s * 64) for s in "abc"] == [done.key, redriven.key, redriven.key]


def test_files_handed_over_are_new_held_by_a_batch_duplicated_or_skipped_with_their_reason(tmp_path):
    states = {}
    intake = _intake(tmp_path, states)
    folder = tmp_path / "up"
    folder.mkdir()
    for name, content in {"a.wav": b"A", "b.wav": b"B", "a-copy.wav": b"A", "c.wav": b"C"}.items():
        (folder / name).write_bytes(content)
    os.symlink(folder / "a.wav", folder / "link.wav")
    earlier = intake.commit([_item(hashlib.sha256(b"C").hexdigest(), "c.wav")], NOW)
    states[earlier.key] = BatchState.STRANDED
    files = [folder / n for n in ("a.wav", "b.wav", "a-copy.wav", "c.wav", "link.wav", "missing.wav")]
    manifests, others = batch_files(files, "alice", NOW, intake, BatchLimits(max_files=1))
    assert [[i.relative_path for i in m.items] for m in manifests] == [["a.wav"], ["b.wav"]], "one file per batch"
    assert manifests[0].items[0].source_path == str(folder / "a.wav") and manifests[0].items[0].size == 1
    by_name = {h.path.name: h for h in others}
    assert (by_name["a-copy.wav"].batch_key, by_name["a-copy.wav"].state) == (manifests[0].key, BatchState.RUNNING)
    assert (by_name["c.wav"].batch_key, by_name["c.wav"].state) == (earlier.key, BatchState.STRANDED)
    assert by_name["link.wav"].skipped.reason == "symlink" and by_name["missing.wav"].skipped.reason == "vanished"
    assert set(by_name) == {"a-copy.wav", "c.wav", "link.wav", "missing.wav"}


def test_batches_close_at_the_file_or_byte_limit_and_never_empty():
    limits = BatchLimits(max_files=3, max_bytes=100)

    def sizes(*item_sizes):
        items = [_item(f"{index:064x}", size=size) for index, size in enumerate(item_sizes)]
        return [item.size for item in take_chunk(items, limits, item_of=lambda item: item)]

    assert sizes(10, 20, 30, 40) == [10, 20, 30]
    assert sizes(60, 40, 1) == [60, 40]
    assert sizes(60, 41) == [60]
    assert sizes(500, 1) == [500], "an upload bigger than the limit is a batch of its own"
    assert sizes() == []


def test_what_cannot_be_taken_says_why(tmp_path):
    with pytest.raises(Skipped) as bad_name:
        check_name("alice/M\udce4rz.wav")
    assert bad_name.value.reason == "name_not_utf8" and "M\\xe4rz.wav" in bad_name.value.message
    check_name("alice/März.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    assert _skip_reason(tmp_path / "pipe.wav") == "not_a_file"
    assert _skip_reason(tmp_path) == "not_a_file"
    assert _skip_reason(tmp_path / "gone.wav") == "vanished"
    os.symlink(tmp_path / "pipe.wav", tmp_path / "link.wav")
    assert _skip_reason(tmp_path / "link.wav") == "symlink"
    assert printable("a/M\udce4rz") == "a/M\\xe4rz" and printable("plain") == "plain"
    skips = Skips()
    for index in range(7):
        skips.add(Skipped("unreadable", "x"), f"alice/{index}.wav")
    skips.add(Skipped("symlink", "x"), "bob/l.wav")
    assert dict(skips.counts) == {"unreadable": 7, "symlink": 1}
    assert skips.summary() == "1 symlink (bob/l.wav), 7 unreadable (alice/0.wav, alice/1.wav, alice/2.wav, alice/3.wav, alice/4.wav)"


def _skip_reason(path) -> str:
    with pytest.raises(Skipped) as skipped:
        read_upload(path)
    return skipped.value.reason


def test_the_cursor_survives_its_json_with_waiting_items_intact():
    cursor = LandingCursor(pending={"alice/a.wav": [1, 2]}, waiting=[Waiting(_item("a" * 64), NOW.isoformat())], resume_after="alice/a.wav")
    assert LandingCursor.from_json(cursor.to_json()) == cursor
    assert LandingCursor.from_json(None) == LandingCursor() == LandingCursor.from_json("")


# --- the quarantine -----------------------------------------------------------------------------------------


def _table_rows(schema, rows):
    from diary_platform.domain.schemas import blank_row, table

    return table(schema, [{**blank_row(schema), **row} for row in rows])


def _identity(sha, key, status="ok", reason=None):
    return {"recording_id": sha[:24], "content_sha256": sha, "batch_key": key, "user": "alice",
            "recorded_at": NOW, "status": status, "reason": reason, "message": f"{reason} happened" if reason else None}


def test_the_quarantine_lists_latest_rejections_and_given_up_batches_and_filters_by_reason(tmp_path):
    from diary_platform.domain.catalog import Catalog
    from diary_platform.domain.ingest.quarantine import Selection, list_quarantine
    from diary_platform.domain.schemas import RAW_AUDIO, VALIDATED_AUDIO

    store = DataStore(tmp_path)
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    raw = lambda sha, key: {**_identity(sha, key), "source_path": f"/up/{sha[0]}.wav", "source_name": f"{sha[0]}.wav",  # noqa: E731
                            "original_uri": f"file:///o/{sha[0]}", "size_bytes": 5}
    store.write_table("raw_audio", "20261126T100000Z-1", _table_rows(RAW_AUDIO, [raw(a, "20261126T100000Z-1"), raw(b, "20261126T100000Z-1")]))
    store.write_table("validated_audio", "20261126T100000Z-1", _table_rows(VALIDATED_AUDIO, [
        {**_identity(a, "20261126T100000Z-1", "quarantined", "too_long"), "original_uri": "file:///o/a"},
        {**_identity(b, "20261126T100000Z-1", "quarantined", "empty_file"), "original_uri": "file:///o/b"},
    ]))
    store.write_table("raw_audio", "20261126T110000Z-2", _table_rows(RAW_AUDIO, [raw(b, "20261126T110000Z-2")]))
    store.write_table("validated_audio", "20261126T110000Z-2", _table_rows(VALIDATED_AUDIO, [
        {**_identity(b, "20261126T110000Z-2"), "original_uri": "file:///o/b"},
    ]))
    intake = _intake(tmp_path)
    given_up = intake.commit([_item(c, "c.wav"), _item(a, "a-again.wav")], NOW)
    intake.batches.give_up(given_up.key, 3, "transcripts: boom", NOW)
    listed = {(r.recording_id[0], r.reason, r.batch_key) for r in list_quarantine(Catalog(store), intake.batches)}
    assert listed == {("a", "too_long", "20261126T100000Z-1"), ("c", "gave_up", given_up.key), ("a", "gave_up", given_up.key)}
    [gave_up_c] = [r for r in list_quarantine(Catalog(store), intake.batches, Selection(reasons=frozenset({"gave_up"}))) if r.recording_id[0] == "c"]
    assert gave_up_c.source_name == "c.wav" and "3 times" in gave_up_c.message and "transcripts: boom" in gave_up_c.message
    assert gave_up_c.stored_original is None and gave_up_c.source_path == "/up/c.wav"
    [too_long] = list_quarantine(Catalog(store), intake.batches, Selection(reasons=frozenset({"too_long"})))
    assert (too_long.source_name, too_long.stored_original, too_long.message, too_long.size_bytes) == ("a.wav", "file:///o/a", "too_long happened", 5)
    assert list_quarantine(Catalog(DataStore(tmp_path / "empty")), FileBatchStore(tmp_path / "none")) == []
    by_user = list_quarantine(Catalog(store), intake.batches, Selection(users=frozenset({"nobody"})))
    by_id = list_quarantine(Catalog(store), intake.batches, Selection(recording_ids=frozenset({c[:24]})))
    assert by_user == [] and [(r.recording_id, r.reason) for r in by_id] == [(c[:24], "gave_up")]
    both = Selection(reasons=frozenset({"too_long"}), recording_ids=frozenset({c[:24]}))
    assert list_quarantine(Catalog(store), intake.batches, both) == [], "filters combine"


def test_an_unknown_reason_code_is_an_error_that_names_the_known_ones():
    from diary_platform.domain.ingest.quarantine import Selection, UnknownReason

    with pytest.raises(UnknownReason, match="unknown reason code nonsense; the reasons are: empty_file, playlist"):
        Selection(reasons=frozenset({"nonsense", "too_long"}))


def test_every_reason_code_the_code_gives_is_registered():
    """The `reason` column only takes registered codes: a new code given anywhere must be registered too."""
    import re

    from diary_platform.domain.schemas import REASONS

    package = Path(__file__).resolve().parent.parent / "diary_platform"
    given = set()
    for source in package.rglob("*.py"):
        text = source.read_text()
        given |= set(re.findall(r'(?:AudioRejected|_quarantine)\(\s*"([a-z_]+)"', text))
        given |= set(re.findall(r'"reason": "([a-z_]+)"', text))
    assert len(given) >= 12 and given <= set(REASONS), given - set(REASONS)


# --- the landing scanner, tick by tick --------------------------------------------------------------------------


def _scanner(tmp_path, states=None, **limits):
    landing = tmp_path / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    intake = _intake(tmp_path, states, role="sensor")
    return landing, intake, LandingScanner(landing, intake, BatchLimits(**{"max_wait_seconds": 0, **limits}))


def _two_ticks(scanner, cursor=None):
    first = scanner.tick(cursor or LandingCursor(), NOW)
    return first, scanner.tick(LandingCursor.from_json(first.cursor.to_json()), NOW + timedelta(seconds=15))


def test_names_uploaders_use_for_unfinished_files_and_hidden_files_are_passed_over(tmp_path):
    landing, _, scanner = _scanner(tmp_path)
    for name in (".hidden.wav", "a.part", "b.tmp", "c.crdownload", "d.wav"):
        (landing / name).write_bytes(name.encode())
    (landing / ".cache").mkdir()
    (landing / ".cache" / "x.wav").write_bytes(b"x")
    _, second = _two_ticks(scanner)
    assert [i.relative_path for b in second.batches for i in b.items] == ["d.wav"] and second.files_scanned == 1


def test_a_tick_reports_every_file_it_cannot_take_with_its_reason_and_path(tmp_path):
    landing, _, scanner = _scanner(tmp_path)
    (landing / "alice").mkdir()
    os.mkfifo(landing / "alice" / "pipe.wav")
    os.symlink("/etc/passwd", landing / "alice" / "link.wav")
    (landing / "alice" / "ok.wav").write_bytes(b"ok")
    _, second = _two_ticks(scanner)
    assert dict(second.skips.examples) == {"not_a_file": ["alice/pipe.wav"], "symlink": ["alice/link.wav"]}
    assert [i.relative_path for b in second.batches for i in b.items] == ["alice/ok.wav"]
    with pytest.raises(Skipped) as fifo:
        LandingScanner._observe("alice/pipe.wav", next(e for e in os.scandir(landing / "alice") if e.name == "pipe.wav"))
    assert (fifo.value.reason, fifo.value.message) == ("not_a_file", "alice/pipe.wav is not a regular file (a FIFO, device or socket)")
    with pytest.raises(Skipped) as link:
        LandingScanner._observe("alice/link.wav", next(e for e in os.scandir(landing / "alice") if e.name == "link.wav"))
    assert link.value.message == "alice/link.wav is a symbolic link; links are never followed"


def test_hashing_stops_at_its_byte_budget_and_the_rest_waits_for_the_next_tick(tmp_path):
    landing, intake, scanner = _scanner(tmp_path, max_bytes_hashed=15)
    for name in ("a.wav", "b.wav", "c.wav"):
        (landing / name).write_bytes(name.encode() * 2)  # 10 bytes each
    first, second = _two_ticks(scanner)
    assert [i.relative_path for b in second.batches for i in b.items] == ["a.wav"]
    assert second.cursor.pending == {n: [10, (landing / n).stat().st_mtime_ns] for n in ("b.wav", "c.wav")}
    third = scanner.tick(LandingCursor.from_json(second.cursor.to_json()), NOW + timedelta(seconds=30))
    assert [i.relative_path for b in third.batches for i in b.items] == ["b.wav"], "one more within the budget"


def test_duplicates_are_counted_and_each_file_marked_with_the_batch_that_holds_its_content(tmp_path):
    landing, intake, scanner = _scanner(tmp_path)
    (landing / "alice").mkdir()
    for name in ("a.wav", "a-copy.wav", "a-again.wav"):
        (landing / "alice" / name).write_bytes(b"same content")
    (landing / "alice" / "b.wav").write_bytes(b"other content")
    _, second = _two_ticks(scanner)
    [batch] = second.batches
    assert second.duplicates == 2 and len(batch.items) == 2
    for name in ("a.wav", "a-copy.wav", "a-again.wav", "b.wav"):
        status = (landing / "alice" / name).stat()
        key = LandingFileKey("alice", f"alice/{name}", status.st_size, status.st_mtime_ns)
        assert intake.claims.taken_files([key]) == {key}, name
    marker = intake.claims._marker("files", LandingFileKey("alice", "alice/b.wav", *[(landing / "alice" / "b.wav").stat().st_size,
                                                                                     (landing / "alice" / "b.wav").stat().st_mtime_ns]).digest)
    assert json.loads(marker.read_text())["batch"] == batch.key
    (landing / "alice" / "later.wav").write_bytes(b"other content")
    _, again = _two_ticks(scanner, LandingCursor.from_json(second.cursor.to_json()))
    status = (landing / "alice" / "later.wav").stat()
    later = intake.claims._marker("files", LandingFileKey("alice", "alice/later.wav", status.st_size, status.st_mtime_ns).digest)
    assert again.duplicates == 1 and json.loads(later.read_text()) == {
        "path": "alice/later.wav", "user": "alice", "sha256": hashlib.sha256(b"other content").hexdigest(), "batch": batch.key}


def test_a_batch_closes_when_exactly_full_and_a_tick_closes_at_most_max_batches(tmp_path):
    landing, _, scanner = _scanner(tmp_path, max_files=2, max_wait_seconds=3600, max_batches_per_tick=2)
    for index in range(5):
        (landing / f"{index}.wav").write_bytes(bytes([index]) * 3)
    _, second = _two_ticks(scanner)
    assert [len(b.items) for b in second.batches] == [2, 2] and len(second.cursor.waiting) == 1
    landing2, _, by_bytes = _scanner(tmp_path / "bytes", max_bytes=6, max_wait_seconds=3600)
    for index in range(3):
        (landing2 / f"{index}.wav").write_bytes(bytes([index]) * 3)
    first = by_bytes.tick(LandingCursor(), NOW)
    (landing2 / "settling.wav").write_bytes(b"still being written")
    second = by_bytes.tick(LandingCursor.from_json(first.cursor.to_json()), NOW + timedelta(seconds=15))
    assert [len(b.items) for b in second.batches] == [2], "exactly max_bytes closes the batch"
    assert len(second.cursor.waiting) == 1, "a partial batch waits while another upload settles"


def test_a_lone_upload_in_an_idle_folder_closes_its_batch_at_once(tmp_path):
    landing, _, scanner = _scanner(tmp_path, max_files=16, max_wait_seconds=3600)
    (landing / "alice").mkdir()
    (landing / "alice" / "memo.wav").write_bytes(b"memo")
    first, second = _two_ticks(scanner)
    assert first.batches == [] and first.cursor.pending, "not before it has settled"
    assert [[i.relative_path for i in b.items] for b in second.batches] == [["alice/memo.wav"]]
    assert second.cursor.waiting == []


def test_a_commit_that_loses_some_claims_rewrites_its_manifest_with_its_time_and_owner(tmp_path):
    intake = _intake(tmp_path)
    intake.commit([_item("a" * 64)], NOW)
    kept = intake.commit([_item("a" * 64), _item("b" * 64, "b.wav")], NOW)
    on_disk = intake.batches.read(kept.key)
    assert (on_disk.created_at, on_disk.owner, [i.content_sha256 for i in on_disk.items]) == (NOW.isoformat(), intake.owner, ["b" * 64])
    claim = intake.claims.content_claim("b" * 64)
    assert (claim.source, claim.owner) == ("/up/b.wav", intake.owner)


def test_a_reclaimed_or_redriven_claim_names_its_new_source_and_owner(tmp_path):
    states = {}
    intake = _intake(tmp_path, states)
    old = intake.commit([_item("a" * 64)], NOW)
    states[old.key] = BatchState.GAVE_UP
    other = Intake(intake.batches, intake.claims, Owner.this_process("redrive"), intake.state_of)
    new = other.commit([_item("a" * 64, "renamed.wav")], NOW)
    claim = intake.claims.content_claim("a" * 64)
    assert (claim.batch_key, claim.source, claim.owner.role) == (new.key, "/up/renamed.wav", "redrive")
    states[new.key] = BatchState.GAVE_UP
    redriven = other.redrive([_item("a" * 64, "again.wav"), _item("c" * 64, "c.wav")], NOW)
    assert (redriven.created_at, redriven.owner.role) == (NOW.isoformat(), "redrive")
    for sha, source in (("a" * 64, "/up/again.wav"), ("c" * 64, "/up/c.wav")):
        claim = intake.claims.content_claim(sha)
        assert (claim.batch_key, claim.source, claim.owner.role) == (redriven.key, source, "redrive")
    assert intake.batches.lease(redriven.key).owner.role == "redrive"


def test_a_file_whose_content_another_process_claimed_in_between_is_reported_with_that_batch(tmp_path):
    states = {}
    intake = _intake(tmp_path, states)
    upload = tmp_path / "a.wav"
    upload.write_bytes(b"A")
    sha = hashlib.sha256(b"A").hexdigest()

    class Racing(Intake):
        def commit(self, items, now, file_keys=None):
            rival.commit([_item(sha, "rival.wav")], now)  # another process wins the race between look and claim
            return super().commit(items, now, file_keys)

    rival = _intake(tmp_path, states, role="sensor")
    racing = Racing(intake.batches, intake.claims, intake.owner, intake.state_of)
    manifests, [lost] = batch_files([upload], "alice", NOW, racing, BatchLimits())
    assert manifests == [] and (lost.path, lost.content_sha256, lost.state) == (upload, sha, BatchState.RUNNING)
    assert lost.batch_key == intake.claims.content_batch(sha)


def test_each_read_error_of_an_upload_becomes_a_skip_that_names_the_file(tmp_path, monkeypatch):
    import diary_platform.domain.ingest.landing as landing

    path = tmp_path / "a.wav"
    for error, reason, words in [
        (PermissionError(errno.EACCES, "Permission denied"), "unreadable", "cannot be read: Permission denied"),
        (OSError(errno.EIO, "Input/output error"), "unreadable", "cannot be read: Input/output error"),
        (OSError(errno.ELOOP, "Too many levels of symbolic links"), "symlink", "is a symbolic link; links are never followed"),
        (FileNotFoundError(errno.ENOENT, "No such file"), "vanished", "was gone before it could be read"),
        (NotARegularFile("x"), "not_a_file", "is not a regular file (a FIFO, device or folder)"),
    ]:
        monkeypatch.setattr(landing, "sha256_upload", lambda p, error=error: (_ for _ in ()).throw(error))
        with pytest.raises(Skipped) as skipped:
            read_upload(path)
        assert (skipped.value.reason, skipped.value.message) == (reason, f"{path} {words}" if not words.startswith("cannot") else f"{path} {words}")
    monkeypatch.setattr(landing, "sha256_upload", lambda p: pytest.fail("a bad name is refused before the file is opened"))
    with pytest.raises(Skipped):
        read_upload(Path(os.fsdecode(b"/tmp/M\xe4rz.wav")))


def test_a_redrive_reads_each_recording_from_its_stored_original_under_its_own_name(tmp_path):
    from diary_platform.domain.ingest.quarantine import QuarantinedRecording, redrive_manifest

    recorded = datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc)
    kept = QuarantinedRecording("a" * 24, "a" * 64, "alice", "b1", "too_long", "m", "Tagebuch.flac", "file:///o/a.flac", "/up/Tagebuch.flac", 7, recorded)
    lost = replace(kept, recording_id="c" * 24, content_sha256="c" * 64, stored_original=None, source_path="/up/c.flac", source_name="c.flac")
    manifest = redrive_manifest([kept, lost], NOW, _intake(tmp_path))
    assert manifest.items == (
        BatchItem("alice", "file:///o/a.flac", "Tagebuch.flac", 7, int(recorded.timestamp() * 1e9), "a" * 64),
        BatchItem("alice", "/up/c.flac", "c.flac", 7, int(recorded.timestamp() * 1e9), "c" * 64),
    )


def test_a_given_up_recording_carries_its_stored_original_and_leaves_once_a_later_batch_has_it(tmp_path):
    from diary_platform.domain.catalog import Catalog
    from diary_platform.domain.ingest.quarantine import list_quarantine
    from diary_platform.domain.schemas import RAW_AUDIO, VALIDATED_AUDIO

    store = DataStore(tmp_path)
    intake = _intake(tmp_path)
    c, d = "c" * 64, "d" * 64
    given_up = intake.commit([_item(c, "c.wav", size=9), _item(d, "d.wav")], NOW)
    intake.batches.give_up(given_up.key, 4, "validated_audio: disk", NOW)
    store.write_table("raw_audio", given_up.key, _table_rows(RAW_AUDIO, [
        {**_identity(c, given_up.key), "source_path": "/up/c.wav", "source_name": "c.wav", "original_uri": "file:///o/c", "size_bytes": 9},
        {**_identity(d, given_up.key, "quarantined", "source_missing"), "source_path": "/up/d.wav", "source_name": "d.wav",
         "original_uri": None, "size_bytes": 10},
    ]))
    [entry_c, entry_d] = list_quarantine(Catalog(store), intake.batches)
    assert (entry_c.recording_id, entry_c.content_sha256, entry_c.user, entry_c.size_bytes) == (c[:24], c, "alice", 9)
    assert entry_c.stored_original == "file:///o/c" and entry_d.stored_original is None
    assert entry_c.recorded_at == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)
    assert "failed 4 times" in entry_c.message and "validated_audio: disk" in entry_c.message
    later = "20261126T130000Z-later"
    store.write_table("raw_audio", later, _table_rows(RAW_AUDIO, [
        {**_identity(c, later), "source_path": "/up/c.wav", "source_name": "c.wav", "original_uri": "file:///o/c", "size_bytes": 9}]))
    store.write_table("validated_audio", later, _table_rows(VALIDATED_AUDIO, [{**_identity(c, later), "original_uri": "file:///o/c"}]))
    assert [r.recording_id for r in list_quarantine(Catalog(store), intake.batches)] == [d[:24]]
    rejected = "20261126T140000Z-rej"
    store.write_table("raw_audio", rejected, _table_rows(RAW_AUDIO, [
        {**_identity(d, rejected), "source_path": "/up/d.wav", "source_name": "d.wav", "original_uri": None, "size_bytes": 10}]))
    store.write_table("validated_audio", rejected, _table_rows(VALIDATED_AUDIO, [
        {**_identity(d, rejected, "quarantined", "empty_file"), "message": None, "original_uri": None}]))
    [entry] = list_quarantine(Catalog(store), intake.batches)
    assert (entry.reason, entry.batch_key, entry.message, entry.source_path, entry.user) == ("empty_file", rejected, "", "/up/d.wav", "alice")
    assert entry.recorded_at == NOW and entry.content_sha256 == d


def test_a_scan_stops_at_its_file_budget_and_the_next_tick_resumes_after_the_last_file_it_saw(tmp_path):
    landing, _, scanner = _scanner(tmp_path, max_files_scanned=2)
    for name in ("a.wav", "b.wav", "c.wav"):
        (landing / name).write_bytes(name.encode())
    first = scanner.tick(LandingCursor(), NOW)
    assert (first.files_scanned, first.cursor.resume_after, sorted(first.cursor.pending)) == (2, "b.wav", ["a.wav", "b.wav"])
    second = scanner.tick(LandingCursor.from_json(first.cursor.to_json()), NOW + timedelta(seconds=15))
    assert (second.files_scanned, second.cursor.resume_after) == (1, ""), "the rest, then from the start again"
    assert sorted(second.cursor.pending) == ["a.wav", "b.wav", "c.wav"]


def test_the_cli_batches_a_file_under_its_user_with_its_own_size_and_time(tmp_path):
    upload = tmp_path / "memo.wav"
    upload.write_bytes(b"memo")
    os.utime(upload, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    [manifest], others = batch_files([upload], "bob", NOW, _intake(tmp_path), BatchLimits())
    assert manifest.items == (BatchItem("bob", str(upload), "memo.wav", 4, 1_700_000_000_123_456_789, hashlib.sha256(b"memo").hexdigest(), 4 / 16_000),)
    assert others == []


def test_recovery_looks_at_each_batch_on_its_own_and_gives_up_with_a_default_reason(tmp_path):
    now = NOW + FOREIGN_LEASE + timedelta(hours=1)
    batches = FileBatchStore(tmp_path / "batches")
    intake = Intake(batches, FileClaims(tmp_path / "claims"), Owner("cli", "elsewhere", "", 1, 1), lambda key: BatchState.RUNNING)
    done, stranded, failing = (intake.commit([_item(s * 64)], NOW) for s in "abc")
    runs = {done.key: _runs(done=True), stranded.key: _runs(), failing.key: BatchRuns(False, False, 3, None)}
    recovery = Recovery(batches, runs.__getitem__, max_attempts=3)
    assert [m.key for m, _ in recovery.stranded(NOW - timedelta(days=1), now)] == [stranded.key]
    assert batches.gave_up(failing.key)["last_error"] == "the run failed" and batches.gave_up(done.key) is None
