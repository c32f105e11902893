from datetime import datetime, timezone

import dagster as dg

from diary_platform import telemetry
from diary_platform.batch.process_batch import PROCESS_BATCH
from diary_platform.batch.recovery import batch_run_tags, recovery_for
from diary_platform.domain import instruments
from diary_platform.domain.ingest.claims import Owner
from diary_platform.domain.ingest.landing import Intake, LandingCursor, LandingScanner
from diary_platform.domain.ingest.recovery import SENSOR_ROLE
from diary_platform.partitions import batch_partitions
from diary_platform.resources import LandingFolder, StoreResource


@dg.sensor(
    job_name=PROCESS_BATCH,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns settled uploads in the landing folder into batches: one partition and one run per batch.",
)
def landing_sensor(context: dg.SensorEvaluationContext, store: StoreResource, landing: LandingFolder):
    telemetry.configure()
    now = datetime.now(timezone.utc)
    recovery = recovery_for(context.instance, store.batches, store.catalog)
    intake = Intake(store.batches, store.claims, Owner.this_process(SENSOR_ROLE), lambda key: recovery.state(key, now))
    scanner = LandingScanner(landing.root, intake, landing.limits())
    with instruments.current().tracer.start_as_current_span("landing_sensor tick") as span:
        tick = scanner.tick(LandingCursor.from_json(context.cursor), now)
        keys = [batch.key for batch in tick.batches]
        span.set_attributes({"diary.files_scanned": tick.files_scanned, "diary.batches": len(keys)})
        trace_tags = telemetry.traceparent_tags()
    summary = (
        f"scanned {tick.files_scanned} files: {len(tick.cursor.pending)} settling, {len(tick.cursor.waiting)} waiting "
        f"for a batch, {tick.duplicates} duplicates, {len(keys)} new batches"
    )
    if tick.skips.counts:
        summary += f"; not taken: {tick.skips.summary()}"
    context.log.info(summary)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=batch.key, run_key=batch.key, tags={**batch_run_tags("sensor", batch), **trace_tags})
            for batch in tick.batches
        ],
        skip_reason=None if keys else summary,
        dynamic_partitions_requests=[batch_partitions.build_add_request(keys)] if keys else [],
        cursor=tick.cursor.to_json(),
    )
