"""What the Dagster instance knows of a batch, and the sensor that resumes batches a crash left half done.

A batch is done when its `diary_notes` materialized. A run of it counts as live while it is queued or
running, unless it ran in a process (a `diary run`) that is gone: such a run is reported failed here,
so the UI shows what happened. Failed runs Dagster will retry by itself count as live too.
"""

from datetime import datetime, timezone

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from dagster._core.storage.tags import MAX_RETRIES_TAG, WILL_RETRY_TAG

from diary_platform.batch.process_batch import PROCESS_BATCH
from diary_platform.domain import catalog
from diary_platform.domain.ingest.batches import BatchManifest, BatchStore
from diary_platform.domain.ingest.claims import Owner
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.ingest.recovery import RECOVERY_WINDOW, BatchRuns, Recovery
from diary_platform.partitions import BATCHES, batch_partitions
from diary_platform.resources import StoreResource

PROCESS_TAGS = {"role": "diary/role", "host": "diary/host", "boot_id": "diary/boot", "pid": "diary/pid", "started": "diary/started"}
PARTITION_TAG = "dagster/partition"
MAX_RESUMED_PER_TICK = 32


def process_tags(owner: Owner) -> dict[str, str]:
    """Run tags naming the process that executes a run in-process, so a later look can tell it is gone. The
    daemon cannot relaunch such a run (it has no code location to launch from): recovery resumes it instead."""
    return {MAX_RETRIES_TAG: "0", **{tag: str(getattr(owner, name)) for name, tag in PROCESS_TAGS.items()}}


def batch_run_tags(source: str, manifest: BatchManifest) -> dict[str, str]:
    """What the UI's run list shows of a batch run: who launched it (cli, sensor, recovery, redrive), whose
    recordings, which batch."""
    users = ",".join(sorted({item.user for item in manifest.items}))
    return {"diary/source": source, "diary/users": users, "diary/batch": manifest.key, "diary/recordings": str(len(manifest.items))}


def _owner_of(tags: dict[str, str]) -> Owner | None:
    if PROCESS_TAGS["pid"] not in tags:
        return None
    return Owner(
        role=tags[PROCESS_TAGS["role"]], host=tags[PROCESS_TAGS["host"]], boot_id=tags[PROCESS_TAGS["boot_id"]],
        pid=int(tags[PROCESS_TAGS["pid"]]), started=int(tags[PROCESS_TAGS["started"]]),
    )


def _last_error(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """What made the run fail: its last failed step's error, else the run's own failure message."""
    for entry in reversed(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)):
        error = entry.dagster_event.step_failure_data.error
        if error is not None:
            return f"{entry.dagster_event.step_key}: {error.message.strip()}"
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return failures[-1].dagster_event.message if failures else None


def batch_runs(instance: dg.DagsterInstance, key: str, stored: Catalog) -> BatchRuns:
    """What Dagster recorded of the batch; once retention deleted its runs (batch/retention.py), its stored notes."""
    notes = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(catalog.DIARY_NOTES), asset_partitions=[key]), limit=1
    )
    live = False
    failed: list[dg.DagsterRun] = []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={PARTITION_TAG: key}))
    for run in runs:
        if run.status in NOT_FINISHED_STATUSES:
            owner = _owner_of(run.tags)
            if owner is not None and owner.alive() is False:
                instance.report_run_failed(run, f"the process that ran it ({owner.label()}) is gone; the batch is resumable")
                failed.append(run)
            else:
                live = True
        elif run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            if run.tags.get(WILL_RETRY_TAG) == "true":
                live = True
            else:
                failed.append(run)
    last_error = _last_error(instance, failed[0]) if failed else None  # runs come newest first
    done = bool(notes.records) or (not runs and stored.has(catalog.DIARY_NOTES, key))
    return BatchRuns(done=done, live=live, failures=len(failed), last_error=last_error)


def fail_runs_of_this_process(instance: dg.DagsterInstance, message: str) -> None:
    """Mark the unfinished runs this process executes as failed: it is about to stop."""
    me = Owner.this_process("")
    tags = {PROCESS_TAGS[name]: str(getattr(me, name)) for name in ("host", "boot_id", "pid", "started")}
    for run in instance.get_runs(filters=dg.RunsFilter(tags=tags, statuses=list(NOT_FINISHED_STATUSES))):
        instance.report_run_failed(run, message)


def recovery_for(instance: dg.DagsterInstance, batches: BatchStore, stored: Catalog) -> Recovery:
    return Recovery(batches, lambda key: batch_runs(instance, key, stored))


@dg.sensor(
    job_name=PROCESS_BATCH,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Resumes batches a crash, a kill or a pre-emption left half done (not done, no live run, no live "
        "owner): one new run per attempt; after three failures their recordings are quarantined as gave_up."
    ),
)
def recovery_sensor(context: dg.SensorEvaluationContext, store: StoreResource):
    now = datetime.now(timezone.utc)
    recovery = recovery_for(context.instance, store.batches, store.catalog)
    requests, unregistered = [], []
    for manifest, runs in recovery.stranded(now - RECOVERY_WINDOW, now):
        if len(requests) >= MAX_RESUMED_PER_TICK:
            break
        if not context.instance.has_dynamic_partition(BATCHES, manifest.key):
            unregistered.append(manifest.key)
        attempt = runs.failures + 1
        requests.append(
            dg.RunRequest(
                partition_key=manifest.key,
                run_key=f"{manifest.key}:attempt-{attempt}",
                tags={**batch_run_tags("recovery", manifest), "diary/attempt": str(attempt)},
            )
        )
    if not requests:
        return dg.SkipReason("no batch to resume")
    context.log.info(f"resuming {len(requests)} batches: {', '.join(r.partition_key for r in requests)}")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batch_partitions.build_add_request(unregistered)] if unregistered else [],
    )
