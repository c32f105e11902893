"""Re-driving the quarantine from the UI: `redrive_job` (launched from the Launchpad with the recordings to take)
makes one new batch of them; when it succeeds, `redriven_batches` runs that batch through `process_batch` like
any other, with the executor the environment configures (GPU pods on GKE).

The new batch's lease is the job's for the moment of hand-over, like the landing sensor's: should the
hand-over never happen (the daemon down), the recovery sensor resumes the batch after that grace.
"""

from datetime import datetime, timezone

import dagster as dg

from diary_platform.batch.process_batch import process_batch
from diary_platform.batch.recovery import batch_run_tags, recovery_for
from diary_platform.domain.ingest.claims import Owner
from diary_platform.domain.ingest.landing import Intake
from diary_platform.domain.ingest.quarantine import Selection, UnknownReason, list_quarantine, redrive_manifest
from diary_platform.domain.ingest.recovery import REDRIVE_JOB_ROLE
from diary_platform.partitions import BATCHES
from diary_platform.resources import StoreResource

REDRIVEN_BATCH_TAG = "diary/redriven_batch"


class RedriveConfig(dg.Config):
    """Which quarantined recordings to process again; a filter left empty takes all (all empty: the whole quarantine)."""

    reasons: list[str] = []
    users: list[str] = []
    recording_ids: list[str] = []


@dg.op(description="Makes one new batch of the quarantined recordings the config selects, under the current limits.")
def redrive_quarantined(context: dg.OpExecutionContext, config: RedriveConfig, store: StoreResource) -> None:
    try:
        selection = Selection(frozenset(config.reasons), frozenset(config.users), frozenset(config.recording_ids))
    except UnknownReason as unknown:
        raise dg.Failure(description=str(unknown), allow_retries=False) from None
    recordings = list_quarantine(store.catalog, store.batches, selection)
    if not recordings:
        context.log.info("no quarantined recording matches; nothing to re-drive")
        return
    now = datetime.now(timezone.utc)
    recovery = recovery_for(context.instance, store.batches, store.catalog)
    intake = Intake(store.batches, store.claims, Owner.this_process(REDRIVE_JOB_ROLE), lambda key: recovery.state(key, now))
    manifest = redrive_manifest(recordings, now, intake)
    context.instance.add_dynamic_partitions(BATCHES, [manifest.key])
    context.instance.add_run_tags(context.run_id, {REDRIVEN_BATCH_TAG: manifest.key})
    listed = "\n".join(f"  {r.recording_id}  {r.user}/{r.source_name}  [{r.reason}]" for r in recordings)
    context.log.info(f"batch {manifest.key}: {len(recordings)} recordings to process again\n{listed}")


@dg.job(description="Process quarantined recordings again (by reason code, user, recording id) as one new batch.")
def redrive_job():
    redrive_quarantined()


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[redrive_job],
    request_job=process_batch,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the batch a successful redrive_job made through process_batch.",
)
def redriven_batches(context: dg.RunStatusSensorContext, store: StoreResource):
    key = context.dagster_run.tags.get(REDRIVEN_BATCH_TAG)
    if key is None:
        return dg.SkipReason(f"run {context.dagster_run.run_id} found nothing to re-drive")
    return dg.RunRequest(partition_key=key, run_key=key, tags=batch_run_tags("redrive", store.batches.read(key)))
