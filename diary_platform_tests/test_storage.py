"""Atomic writes: a failed write leaves the previous version whole and no temp files behind."""

import pytest

from diary_platform.domain.storage import DataStore, atomic_writer, write_text_atomic


def test_a_write_that_fails_halfway_keeps_the_previous_version(tmp_path):
    target = tmp_path / "tables" / "notes.parquet"
    write_text_atomic(target, "version one")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as handle:
            handle.write(b"half of version t")
            raise RuntimeError("disk went away")
    assert target.read_text() == "version one"
    assert [p.name for p in target.parent.iterdir()] == ["notes.parquet"]


def test_originals_are_stored_once_per_content(tmp_path):
    store = DataStore(tmp_path / "data")
    upload = tmp_path / "memo.M4A"
    upload.write_bytes(b"audio bytes")
    first, written = store.store_original(upload, "ab" * 32)
    again, written_again = store.store_original(upload, "ab" * 32)
    assert (written, written_again) == (True, False)
    assert first == again and first.name == "ab" * 32 + ".m4a"
    assert first.read_bytes() == upload.read_bytes()
