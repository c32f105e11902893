import warnings

import dagster as dg

# Checks partitioned like their assets are a preview feature in Dagster 1.13; they are what lets a
# check run per batch or per day, so the platform uses them knowingly.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

BATCHES = "batches"

batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)

# end_offset=1: today is a partition too, so today's digest and costs so far can be materialized.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC", end_offset=1)

# Today's costs follow the batches as they land (the daily schedule still closes each day).
KEEP_TODAY_CURRENT = (
    dg.AutomationCondition.in_latest_time_window()
    & dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.in_progress()
).with_label("today's partition, when a batch lands")

DIGEST_REFRESH_CRON = "*/15 * * * *"
# Today's digests too, but at most once a quarter hour: each rewrite may be a language-model call per user.
KEEP_TODAY_CURRENT_THROTTLED = (
    KEEP_TODAY_CURRENT & dg.AutomationCondition.cron_tick_passed(DIGEST_REFRESH_CRON).since_last_handled()
).with_label("today's partition, when a batch has landed, at most every 15 minutes")
