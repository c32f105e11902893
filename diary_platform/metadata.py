"""Metadata the Dagster UI shows: polars tables as table metadata, numbers under stable keys it can plot."""

from datetime import date, datetime

import dagster as dg
import polars as pl

_COLUMN_TYPES = {pl.Int64: "int", pl.Int32: "int", pl.Float64: "float", pl.Float32: "float", pl.Boolean: "bool"}


def _cell(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def table(frame: pl.DataFrame, rounding: int | None = None) -> dg.TableMetadataValue:
    """A table the UI renders with its column types; floats rounded to `rounding` digits when given."""
    if rounding is not None:
        frame = frame.with_columns(pl.col(pl.Float64).round(rounding))
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, _COLUMN_TYPES.get(dtype.base_type(), "string")) for name, dtype in frame.schema.items()]
    )
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in frame.iter_rows(named=True)]
    return dg.MetadataValue.table(records, schema=schema)
