"""Asset values as Parquet files, one per asset partition, written atomically."""

import dagster as dg
import polars as pl

from diary_platform.domain.storage import DataStore, atomic_writer


class ParquetIOManager(dg.ConfigurableIOManager):
    data_dir: str

    def _path(self, context: dg.OutputContext | dg.InputContext, partition_key: str):
        return DataStore(self.data_dir).table_path(context.asset_key.to_user_string(), partition_key)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        path = self._path(context, context.partition_key)
        with atomic_writer(path) as handle:
            obj.write_parquet(handle)
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(str(path)), "bytes": path.stat().st_size}
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        frames = [pl.read_parquet(self._path(context, key)) for key in context.asset_partition_keys]
        return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
