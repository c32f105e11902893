"""The daily slice's job, apart so that its sensors and schedule can import it."""

import dagster as dg

from diary_platform.domain import catalog
from diary_platform.domain.models.drift import TRANSCRIPT_QUALITY

daily_job = dg.define_asset_job(
    "daily_job",
    selection=dg.AssetSelection.assets(catalog.DAILY_DIGEST, catalog.COST_REPORT, TRANSCRIPT_QUALITY),
    description="A day's digests, cost report and transcript quality.",
)
