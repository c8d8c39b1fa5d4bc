"""The columns of the train/eval shards: raw values, one fixed Arrow type per column.

The exported model takes raw feature values (the transform is inside it), so shards
hold raw values, not transformed ones; what is fixed here is their type, so that every
shard of every file has the same schema whatever format the file came in: numeric
features ``float64``, string features ``string``, the label ``string`` (class names)
or ``float64`` (regression), the passthrough key ``string``. Missing values stay null:
the model fills them with the spec's ``fill_value``.
"""

from __future__ import annotations

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.transform.spec import FeatureTransform, LabelSpec, NumericTransform

__all__ = ["canonical_table", "shard_schema"]


def shard_schema(
    label: LabelSpec, features: list[FeatureTransform], passthrough_key: str | None
) -> pa.Schema:
    """Features in spec order, then the label, then the key (when there is one)."""
    fields = [
        pa.field(
            feature.name,
            pa.float64() if isinstance(feature, NumericTransform) else pa.string(),
        )
        for feature in features
    ]
    fields.append(
        pa.field(label.name, pa.float64() if label.problem_type == "regression" else pa.string())
    )
    if passthrough_key:
        fields.append(pa.field(passthrough_key, pa.string()))
    return pa.schema(fields)


def canonical_table(table: pa.Table, schema: pa.Schema, *, uri: str) -> pa.Table:
    """``table``'s columns of ``schema``, cast to its types; absent columns are null."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(_cast(table.column(field.name), field, uri=uri))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _cast(column: pa.ChunkedArray, field: pa.Field, *, uri: str) -> pa.ChunkedArray:
    source = column.type
    if pa.types.is_dictionary(source):
        column = pc.cast(column, source.value_type)
        source = column.type
    if source == field.type:
        return column
    if pa.types.is_boolean(source):
        column = pc.cast(column, pa.int64())  # statistics count booleans as integers 0/1
    try:
        return pc.cast(column, field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise BadInputError(
            f"column {field.name!r} cannot be read as {field.type}: {error}",
            uri=uri,
            location=f"column {field.name!r}",
        ) from error
