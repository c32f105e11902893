"""Storage on Google Cloud Storage: gcp-storage-emulator on 127.0.0.1, the real google-cloud-storage client."""

import dagster as dg
import pytest

from diary_platform.domain.store.objects import GcsStore
from diary_platform.runner import process_files
from diary_platform.resources import open_store
from diary_platform_tests.conftest import run_job
from diary_platform_tests.test_storage import EXAMPLES, kill_writer_halfway


def _generations(bucket) -> dict[str, int]:
    return {blob.name: blob.generation for blob in bucket.client.list_blobs(bucket.name)}


def test_writes_are_single_objects_and_unchanged_values_are_not_uploaded_again(gcs_bucket):
    client, bucket = gcs_bucket
    store = GcsStore(f"gs://{bucket.name}/diary", client)
    first = store.write_bytes("notes/r1.md", b"# A day\n")
    assert (first.uri, first.tier, first.size, first.new) == (f"gs://{bucket.name}/diary/notes/r1.md", "hot", 8, True)
    generation = _generations(bucket)["diary/notes/r1.md"]
    assert store.write_bytes("notes/r1.md", b"# A day\n").new is False
    assert _generations(bucket)["diary/notes/r1.md"] == generation
    assert store.write_bytes("notes/r1.md", b"# Another day\n").new is True
    assert bucket.blob("diary/notes/r1.md").download_as_bytes() == b"# Another day\n"

    assert store.write_bytes("audio/original/ab/ab.flac", b"audio", content_addressed=True).new is True
    assert store.write_bytes("audio/original/ab/ab.flac", b"other", content_addressed=True).new is False
    assert store.read_bytes("audio/original/ab/ab.flac") == b"audio"
    with store.local_file("audio/original/ab/ab.flac") as path:
        assert path.read_bytes() == b"audio"
    assert not path.exists(), "the local copy is gone after use"
    assert [o.key for o in store.scan()] == ["audio/original/ab/ab.flac", "notes/r1.md"]
    assert store.key(first.uri) == "notes/r1.md"


def test_the_tier_of_an_object_is_its_storage_class(gcs_bucket):
    client, bucket = gcs_bucket
    store = GcsStore(f"gs://{bucket.name}", client)
    for name in ("a", "b", "c"):
        store.write_bytes(f"notes/{name}.md", name.encode())
    for name, storage_class in (("b", "NEARLINE"), ("c", "ARCHIVE")):
        blob = bucket.blob(f"notes/{name}.md")
        blob.storage_class = storage_class
        blob.patch()
    assert {o.key: o.tier for o in store.scan()} == {"notes/a.md": "hot", "notes/b.md": "warm", "notes/c.md": "cold"}
    with pytest.raises(NotImplementedError):
        store.move("notes/a.md", "warm")


def test_a_failed_or_killed_upload_leaves_the_previous_version_and_no_partial_object(gcs_bucket, tmp_path):
    client, bucket = gcs_bucket
    root = f"gs://{bucket.name}/diary"
    store = GcsStore(root, client)
    store.write_bytes("tables/notes/b1.parquet", b"version one")
    before = _generations(bucket)

    with pytest.raises(RuntimeError):
        with store.writer("tables/notes/b1.parquet") as handle:
            handle.write(b"x" * (20 << 20))  # two 8 MiB chunks of a resumable upload are sent
            raise RuntimeError("the network went away")
    assert store.read_bytes("tables/notes/b1.parquet") == b"version one"
    assert _generations(bucket) == before

    kill_writer_halfway(tmp_path, root, "tables/notes/b1.parquet", 40 << 20)
    assert store.read_bytes("tables/notes/b1.parquet") == b"version one"
    assert _generations(bucket) == before, "no new object and no new generation"

    with store.writer("tables/notes/b2.parquet") as handle:
        handle.write(b"y" * (20 << 20))
    assert bucket.get_blob("diary/tables/notes/b2.parquet").size == 20 << 20


def test_the_whole_graph_runs_on_a_bucket_and_a_second_materialization_adds_no_objects(gcs_bucket, settings, monkeypatch):
    client, bucket = gcs_bucket
    monkeypatch.setenv("DIARY_STORAGE_URI", f"gs://{bucket.name}/diary")
    from diary_platform.settings import Settings

    settings = Settings()
    with dg.instance_for_test() as instance:
        report = process_files(EXAMPLES, "alice", settings, instance)
        assert [r.status for r in report.results] == ["ok"] * len(EXAMPLES)
        assert all(r.note_path.startswith(f"gs://{bucket.name}/diary/notes/") for r in report.results)
        first = _generations(bucket)
        kinds = {name.split("/")[1] for name in first}
        assert kinds == {"audio", "tables", "transcripts", "notes"}
        assert len([n for n in first if n.startswith("diary/audio/original/")]) == len(EXAMPLES)
        assert len([n for n in first if n.startswith("diary/tables/")]) == 4
        assert not (settings.data_dir / "hot").exists(), "no object went to the local data folder"

        batch_key = report.results[0].batch_key
        again = run_job(settings, "process_batch", instance, partition_key=batch_key)
        assert again.success
        second = _generations(bucket)
        assert set(second) == set(first), "no new objects"
        unchanged = [n for n in first if not n.startswith("diary/tables/")]
        assert {n: second[n] for n in unchanged} == {n: first[n] for n in unchanged}, "audio, transcripts, notes not re-uploaded"
        event = again.asset_materializations_for_node("transcripts")[0]
        assert event.metadata["path"].value == f"gs://{bucket.name}/diary/tables/transcripts/{batch_key}.parquet"
        assert event.metadata["tier"].value == "hot" and event.metadata["bytes"].value > 0

        note = bucket.blob(f"diary/notes/{report.results[0].recording_id}.md").download_as_text()
        assert note.startswith("# ")


def test_the_storage_job_on_a_bucket_only_records_where_data_is(gcs_bucket, settings, monkeypatch):
    client, bucket = gcs_bucket
    monkeypatch.setenv("DIARY_STORAGE_URI", f"gs://{bucket.name}")
    from diary_platform.settings import Settings

    settings = Settings()
    store = open_store(settings)
    for index in range(4):
        store.objects.write_bytes(f"transcripts/r{index}.txt", b"words " * (index + 1))
    for index, storage_class in ((1, "NEARLINE"), (2, "COLDLINE"), (3, "ARCHIVE")):
        blob = bucket.blob(f"transcripts/r{index}.txt")
        blob.storage_class = storage_class
        blob.patch()
    before = _generations(bucket)
    with dg.instance_for_test() as instance:
        result = run_job(
            settings, "storage_job", instance,
            run_config={"ops": {"storage_tiers": {"config": {"as_of": "2030-01-01T00:00:00+00:00"}}}},
        )
    metadata = result.asset_materializations_for_node("storage_tiers")[0].metadata
    assert metadata["moved_objects"].value == 0
    assert (metadata["hot_objects"].value, metadata["warm_objects"].value, metadata["cold_objects"].value) == (1, 1, 2)
    assert metadata["cold_bytes"].value == len(b"words ") * 7
    assert metadata["lifecycle_rules"].value == []
    after = _generations(bucket)
    assert {n: after[n] for n in before} == before, "nothing was rewritten or moved"


def test_uploads_carry_their_md5_and_a_generation_precondition(gcs_bucket, monkeypatch):
    """The emulator does not enforce preconditions (GCS does), so the arguments sent are checked here."""
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud.storage import Blob

    client, bucket = gcs_bucket
    store = GcsStore(f"gs://{bucket.name}", client)
    sent = []
    upload = Blob.upload_from_string

    def recording(blob, data, **kwargs):
        sent.append((blob.name, kwargs))
        return upload(blob, data, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_string", recording)
    store.write_bytes("notes/a.md", b"one")
    generation = bucket.get_blob("notes/a.md").generation
    store.write_bytes("notes/a.md", b"two")
    store.write_bytes("audio/original/ab/ab.flac", b"audio", content_addressed=True)
    assert sent == [
        ("notes/a.md", {"checksum": "md5", "if_generation_match": 0}),
        ("notes/a.md", {"checksum": "md5", "if_generation_match": generation}),
        ("audio/original/ab/ab.flac", {"checksum": "md5", "if_generation_match": 0}),
    ]

    def raced(blob, data, **kwargs):
        raise PreconditionFailed("another writer got there first")

    upload(bucket.blob("audio/original/cd/cd.flac"), b"theirs")
    monkeypatch.setattr(Blob, "upload_from_string", raced)
    monkeypatch.setattr(GcsStore, "_current", lambda self, key: None)  # as if it was not there when looked up
    written = store.write_bytes("audio/original/cd/cd.flac", b"ours", content_addressed=True)
    assert written.new is False and bucket.blob("audio/original/cd/cd.flac").download_as_bytes() == b"theirs"
    with pytest.raises(PreconditionFailed):
        store.write_bytes("notes/b.md", b"ours")
