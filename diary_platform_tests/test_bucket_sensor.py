"""The landing bucket: gcp-storage-emulator on 127.0.0.1 listing as Cloud Storage documents it
(gcs_listing.py), the real google-cloud-storage client, the real claims and batch manifests."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from diary_platform.batch.landing_sensor import landing_bucket_sensor
from diary_platform.definitions import build_definitions, build_resources
from diary_platform.resources import open_store
from diary_platform.domain import stages
from diary_platform.domain.ingest.batches import FileBatchStore
from diary_platform.domain.ingest.batching import BatchLimits
from diary_platform.domain.ingest.bucket import BucketCursor, BucketScanner, ContentAliases
from diary_platform.domain.ingest.claims import FileClaims, Owner
from diary_platform.domain.ingest.landing import Intake
from diary_platform.domain.ingest.recovery import BatchState
from diary_platform.domain.store.layout import DataStore
from diary_platform.domain.store.uploads import UploadSources
from diary_platform_tests.conftest import run_job
from diary_platform_tests.gcs_listing import documented_listings
from diary_platform_tests.test_batch_sizing import wav_bytes
from diary_platform_tests.test_storage import EXAMPLES

@pytest.fixture(autouse=True, scope="module")
def _listing_as_documented():
    with documented_listings():
        yield


class BucketLanding:
    """A landing prefix in a fresh emulator bucket, a scanner over it and a cursor carried from tick to tick."""

    def __init__(self, gcs_bucket, root: Path, **limits):
        self.client, self.bucket = gcs_bucket
        self.batches = FileBatchStore(root / "batches")
        self.claims = FileClaims(root / "claims")
        intake = Intake(self.batches, self.claims, Owner.this_process("sensor"), lambda key: BatchState.RUNNING)
        limits = BatchLimits(**{"max_wait_seconds": 0, **limits})
        # The emulator's clock is this machine's: no margin for skew, so the high-water mark is exact.
        landing_uri = f"gs://{self.bucket.name}/landing"
        self.scanner = BucketScanner(self.client, landing_uri, intake, ContentAliases(root / "aliases"), limits, clock_skew=timedelta(0))
        self.cursor = BucketCursor()

    def upload(self, relative_path: str, content: bytes):
        blob = self.bucket.blob(f"landing/{relative_path}")
        blob.upload_from_string(content)
        return blob

    def tick(self):
        result = self.scanner.tick(self.cursor, datetime.now(timezone.utc))
        self.cursor = BucketCursor.from_json(result.cursor.to_json())
        return result

    def versions(self) -> dict[str, tuple]:
        """Every object with its generation, metageneration and MD5: what 'not modified' means on GCS."""
        return {b.name: (b.generation, b.metageneration, b.md5_hash) for b in self.client.list_blobs(self.bucket.name)}


def taken(result) -> list[str]:
    return sorted(item.relative_path for batch in result.batches for item in batch.items)


@pytest.fixture
def landing(gcs_bucket, tmp_path):
    return BucketLanding(gcs_bucket, tmp_path)


def test_new_objects_become_batches_pointing_at_their_generation_with_estimated_audio(landing):
    memo = landing.upload("alice/memo.wav", wav_bytes(2.0))
    landing.upload("bob/call.m4a", b"m4a bytes" * 100)
    landing.upload("loose.mp3", b"mp3 bytes" * 100)
    landing.upload("alice/.hidden.wav", b"hidden")
    landing.upload("alice/upload.wav.part", b"unfinished")
    result = landing.tick()
    assert taken(result) == ["alice/memo.wav", "bob/call.m4a", "loose.mp3"], "objects are whole once listed: no settling"
    items = {item.relative_path: item for batch in result.batches for item in batch.items}
    wav = items["alice/memo.wav"]
    assert wav.source_path == f"gs://{landing.bucket.name}/landing/alice/memo.wav#{memo.generation}"
    assert (wav.user, wav.size, wav.estimated_audio_seconds) == ("alice", len(wav_bytes(2.0)), 2.0)
    assert items["loose.mp3"].user == "default"
    assert items["bob/call.m4a"].estimated_audio_seconds == 900 / 8000
    assert taken(landing.tick()) == [] and taken(landing.tick()) == [], "each object version is taken once"


def test_a_rewritten_object_is_a_new_upload_and_the_same_bytes_again_are_a_duplicate(landing):
    landing.upload("alice/memo.wav", wav_bytes(1.0))
    [first] = landing.tick().batches
    landing.upload("alice/memo.wav", wav_bytes(1.0, fill=0x81))
    [second] = landing.tick().batches
    assert second.items[0].source_path != first.items[0].source_path
    assert second.items[0].content_sha256 != first.items[0].content_sha256
    landing.upload("alice/memo.wav", wav_bytes(1.0))  # a third generation with the first one's bytes
    again = landing.tick()
    assert (again.batches, again.duplicates, again.bytes_read) == ([], 1, 0), "known by its MD5: not even read"


def test_the_same_content_under_two_names_is_one_recording_read_once(landing):
    content = wav_bytes(1.5)
    landing.upload("alice/a.wav", content)
    landing.upload("carol/copy of a.wav", content)
    result = landing.tick()
    assert len(taken(result)) == 1 and result.duplicates == 1
    assert result.bytes_read == len(content)


def test_reading_stops_at_the_byte_budget_and_the_next_tick_resumes_at_the_first_object_not_read(landing):
    landing.scanner.limits = BatchLimits(max_bytes_hashed=250, max_wait_seconds=0)
    for index in range(5):
        landing.upload(f"alice/{index}.ogg", bytes([index]) * 100)
    reads, seen = [], []
    for _ in range(4):
        result = landing.tick()
        reads.append(result.bytes_read)
        seen += taken(result)
    assert reads == [200, 200, 100, 0]
    assert seen == [f"alice/{index}.ogg" for index in range(5)]


def test_raw_audio_copies_the_generation_the_sensor_took_and_nothing_in_the_bucket_changes(landing, tmp_path):
    landing.upload("alice/memo.wav", wav_bytes(1.0))
    landing.upload("alice/copy.wav", wav_bytes(1.0))
    before = landing.versions()
    [batch] = landing.tick().batches
    store = DataStore(tmp_path / "data", uploads=UploadSources(lambda: landing.client))
    [row] = stages.ingest(batch, store).to_dicts()
    assert (row["status"], row["source_path"]) == ("ok", batch.items[0].source_path)
    assert store.objects.read_bytes(store.objects.key(row["original_uri"])) == wav_bytes(1.0)
    landing.tick()
    assert landing.versions() == before, "no object written, rewritten or deleted"


def test_a_tick_lists_a_bounded_slice_and_later_sweeps_skip_objects_handled_before(landing, monkeypatch):
    landing.scanner.limits = BatchLimits(max_files_scanned=50, max_wait_seconds=0, max_files=1000)
    for index in range(160):
        landing.upload(f"user{index % 4}/{index:04d}.ogg", f"recording {index}".encode())
    seen = []
    for _ in range(4):
        result = landing.tick()
        assert result.objects_listed <= 50
        seen += taken(result)
    assert len(seen) == len(set(seen)) == 160
    assert landing.cursor.resume_after == "" and landing.cursor.handled_before, "a clean sweep ended: a high-water mark"
    lookups = []
    original = landing.claims.taken_files

    def counted(keys):
        keys = list(keys)
        lookups.extend(keys)
        return original(keys)

    monkeypatch.setattr(landing.claims, "taken_files", counted)
    for _ in range(8):
        assert taken(landing.tick()) == []
    assert lookups == [], "every object was updated before the clean sweep started: no claim is looked up"
    landing.upload("user0/new.ogg", b"a new recording")
    found = []
    for _ in range(4):
        found += taken(landing.tick())
    assert found == ["user0/new.ogg"]
    assert len(lookups) == 1, "only the object updated since the mark costs a claim lookup"


def test_the_dagster_sensor_is_chosen_by_the_landing_uri_and_a_gs_upload_becomes_a_note(gcs_bucket, settings, monkeypatch):
    client, bucket = gcs_bucket
    from diary_platform.settings import ConfigurationError, Settings

    for wrong in ("s3://bucket/landing", "gs://", "/data/landing"):
        monkeypatch.setenv("DIARY_LANDING_URI", wrong)
        with pytest.raises(ConfigurationError, match="DIARY_LANDING_URI: .*expected gs://bucket"):
            Settings()
    monkeypatch.setenv("DIARY_LANDING_URI", f"gs://{bucket.name}/landing")
    settings = Settings()
    sensors = {s.name for s in build_definitions(settings).sensors}
    assert "landing_bucket_sensor" in sensors and "landing_sensor" not in sensors
    clip = EXAMPLES[0]
    bucket.blob(f"landing/alice/{clip.name}").upload_from_filename(str(clip))
    before = {b.name: b.generation for b in client.list_blobs(bucket.name)}
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=build_resources(settings)) as context:
            result = landing_bucket_sensor(context)
        [request] = result.run_requests
        instance.add_dynamic_partitions("batches", [request.partition_key])
        run = run_job(settings, "process_batch", instance, partition_key=request.partition_key, tags=request.tags)
        assert run.success
        [note] = run.output_for_node("diary_notes").to_dicts()
    assert note["status"] == "ok"
    assert open_store(settings).read_text(note["note_uri"]).startswith("# ")
    assert {b.name: b.generation for b in client.list_blobs(bucket.name)} == before, "the upload is untouched"
