import warnings

import dagster as dg

# Checks partitioned like their assets are a preview feature in Dagster 1.13; they are what lets a
# check run per batch or per day, so the platform uses them knowingly.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

BATCHES = "batches"

batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)

# end_offset=1: today is a partition too, so today's digest and costs so far can be materialized.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC", end_offset=1)
