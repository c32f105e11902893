import dagster as dg

BATCHES = "batches"

batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)
