"""Asset values as Parquet objects, one per asset partition, through the tiered store."""

import dagster as dg
import polars as pl

from diary_platform.resources import StoreResource


class ParquetIOManager(dg.ConfigurableIOManager):
    store: dg.ResourceDependency[StoreResource]

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        written = self.store.store.write_table(context.asset_key.to_user_string(), context.partition_key, obj)
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(written.uri),
                "tier": written.tier,
                "bytes": written.size,
                "new_object": written.new,
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        catalog = self.store.catalog
        name = context.asset_key.to_user_string()
        frames = [catalog.batch(name, key) for key in context.asset_partition_keys]
        return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
