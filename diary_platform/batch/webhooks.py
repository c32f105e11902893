"""The API's webhooks: when an uploaded recording is done or quarantined, its status document is POSTed,
signed, to the `webhook_url` given with the upload. Deliveries are records in the shared state, so a
restart loses none; each tick of this sensor sends what is due (domain/webhooks.py: bounded, backing
off, giving up after 8 attempts) and requests no run."""

from datetime import datetime, timezone

import dagster as dg

from diary_platform.api.documents import Documents
from diary_platform.api.keys import ApiKeys
from diary_platform.domain.webhooks import deliver_round
from diary_platform.resources import StoreResource
from diary_platform.settings import Settings


def webhooks_sensor(settings: Settings) -> dg.SensorDefinition:
    keys = ApiKeys.parse(settings.api.keys.get_secret_value(), settings.api.keys_file)
    base = settings.api.public_url.rstrip("/")

    @dg.sensor(
        name="webhooks_sensor",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="POSTs each API upload's status document to its webhook once it is done or quarantined (signed, retried).",
    )
    def sensor(context: dg.SensorEvaluationContext, store: StoreResource):
        state = store.shared_state
        documents = Documents(state.claims, state.batches, store.catalog, lambda rid, name: f"{base}/v1/recordings/{rid}/{name}")

        def status_of(user: str, recording_id: str) -> dict | None:
            upload = state.api_uploads.get(user, recording_id)
            return documents.document(upload) if upload else None

        done = deliver_round(
            state.webhook_deliveries, status_of, lambda user: keys.webhook_secrets.get(user, b""), datetime.now(timezone.utc),
            allow_loopback_http=settings.api.allow_loopback_webhooks,
        )
        summary = f"webhooks: {done.delivered} delivered, {done.retried} to retry, {done.gave_up} given up, {done.waiting} waiting"
        context.log.info(summary)
        return dg.SkipReason(summary)

    return sensor
