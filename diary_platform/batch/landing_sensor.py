"""The sensors that turn uploads into batches: one over the landing folder (the default), one over a
landing bucket (`DIARY_LANDING_URI=gs://...`); the domain's scanners do the work, a tick here reports it
and asks for one partition and one run per batch."""

from datetime import datetime, timezone

import dagster as dg

from diary_platform import telemetry
from diary_platform.batch.process_batch import PROCESS_BATCH
from diary_platform.batch.recovery import batch_run_tags, recovery_for
from diary_platform.domain import instruments
from diary_platform.domain.ingest.batches import BatchManifest
from diary_platform.domain.ingest.bucket import BucketCursor
from diary_platform.domain.ingest.claims import Owner
from diary_platform.domain.ingest.landing import Intake, LandingCursor, LandingScanner, Skips
from diary_platform.domain.ingest.recovery import SENSOR_ROLE
from diary_platform.domain.store.hashing import recording_id_for
from diary_platform.partitions import batch_partitions
from diary_platform.resources import LandingBucket, LandingFolder, StoreResource


def _intake(context: dg.SensorEvaluationContext, store: StoreResource, now: datetime) -> Intake:
    recovery = recovery_for(context.instance, store.batches, store.catalog)
    return Intake(store.batches, store.claims, Owner.this_process(SENSOR_ROLE), lambda key: recovery.state(key, now))


def _link_api_uploads(store: StoreResource, batches: list[BatchManifest]) -> int:
    """Link the tick's span to the request of each upload the HTTP API received, so that its trace leads on to
    the tick (and the tick's to the batch run); the links made."""
    span = instruments.current_span()
    made = 0
    for batch in batches:
        for item in batch.items:
            upload = store.shared_state.api_uploads.get(item.user, recording_id_for(item.content_sha256))
            link = telemetry.link_to(upload.traceparent) if upload and upload.traceparent else None
            if link is not None:
                span.add_link(link.context, {"diary.recording_id": upload.recording_id})
                made += 1
    return made


def _result(context: dg.SensorEvaluationContext, batches: list[BatchManifest], summary: str, skips: Skips, cursor: str) -> dg.SensorResult:
    keys = [batch.key for batch in batches]
    summary += f", {len(keys)} new batches"
    if skips.counts:
        summary += f"; not taken: {skips.summary()}"
    context.log.info(summary)
    trace_tags = telemetry.traceparent_tags()
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=batch.key, run_key=batch.key, tags={**batch_run_tags("sensor", batch), **trace_tags})
            for batch in batches
        ],
        skip_reason=None if keys else summary,
        dynamic_partitions_requests=[batch_partitions.build_add_request(keys)] if keys else [],
        cursor=cursor,
    )


@dg.sensor(
    job_name=PROCESS_BATCH,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns settled uploads in the landing folder into batches: one partition and one run per batch.",
)
def landing_sensor(context: dg.SensorEvaluationContext, store: StoreResource, landing: LandingFolder):
    telemetry.configure()
    now = datetime.now(timezone.utc)
    scanner = LandingScanner(landing.root, _intake(context, store, now), landing.limits())
    with instruments.current().tracer.start_as_current_span("landing_sensor tick") as span:
        tick = scanner.tick(LandingCursor.from_json(context.cursor), now)
        span.set_attributes({"diary.files_scanned": tick.files_scanned, "diary.batches": len(tick.batches),
                             "diary.api_uploads": _link_api_uploads(store, tick.batches)})
        summary = (
            f"scanned {tick.files_scanned} files: {len(tick.cursor.pending)} settling, {len(tick.cursor.waiting)} waiting "
            f"for a batch, {tick.duplicates} duplicates"
        )
        return _result(context, tick.batches, summary, tick.skips, tick.cursor.to_json())


@dg.sensor(
    job_name=PROCESS_BATCH,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns new objects in the landing bucket into batches, listing a bounded slice of it per tick.",
)
def landing_bucket_sensor(context: dg.SensorEvaluationContext, store: StoreResource, landing_bucket: LandingBucket):
    telemetry.configure()
    now = datetime.now(timezone.utc)
    scanner = landing_bucket.scanner(_intake(context, store, now), store.data_dir)
    with instruments.current().tracer.start_as_current_span("landing_bucket_sensor tick") as span:
        tick = scanner.tick(BucketCursor.from_json(context.cursor), now)
        span.set_attributes({"diary.objects_listed": tick.objects_listed, "diary.batches": len(tick.batches),
                             "diary.api_uploads": _link_api_uploads(store, tick.batches)})
        summary = (
            f"listed {tick.objects_listed} objects, read {tick.bytes_read} bytes: {len(tick.cursor.waiting)} waiting for a batch, "
            f"{tick.duplicates} duplicates"
        )
        return _result(context, tick.batches, summary, tick.skips, tick.cursor.to_json())
