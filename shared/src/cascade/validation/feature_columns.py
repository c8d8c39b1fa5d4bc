"""One Arrow column as a feature: its kind, its non-missing values, values per example.

Every Arrow type a reader can produce maps to one of three kinds TFDV knows: INT
(integers and booleans), FLOAT, STRING (text, dates and times as ISO text). Lists of
those are multivalent features. Nested structs and maps are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError

__all__ = ["FeatureColumn", "FeatureKind", "feature_column"]


class FeatureKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    NONE = "none"  # no value seen yet: every example is missing the feature


@dataclass(frozen=True)
class FeatureColumn:
    """``values`` holds no nulls; ``lengths`` is None when each present example has 1 value.

    INT values are int64, or booleans (counted as 0 and 1); FLOAT values are float64;
    STRING values are strings, possibly dictionary-encoded.
    """

    kind: FeatureKind
    values: pa.ChunkedArray
    present: int
    missing: int
    lengths: pa.ChunkedArray | None = None


def _is_list(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    )


def _drop_nulls(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.drop_null(column) if column.null_count else column


def _scalar_kind(data_type: pa.DataType) -> FeatureKind | None:
    if pa.types.is_null(data_type):
        return FeatureKind.NONE
    if pa.types.is_boolean(data_type) or pa.types.is_integer(data_type):
        return FeatureKind.INT
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return FeatureKind.FLOAT
    if pa.types.is_dictionary(data_type):
        return _scalar_kind(data_type.value_type)
    if (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_temporal(data_type)
    ):
        return FeatureKind.STRING
    return None


def _canonical_values(
    name: str, values: pa.ChunkedArray, kind: FeatureKind, *, as_float: bool, uri: str
) -> tuple[FeatureKind, pa.ChunkedArray]:
    """Cast to int64 / float64 / string, keeping dictionary-encoded strings as they are."""
    data_type = values.type
    if kind is FeatureKind.INT and as_float:
        return FeatureKind.FLOAT, pc.cast(values, pa.float64())
    if kind is FeatureKind.INT and pa.types.is_boolean(data_type) and not as_float:
        return kind, values  # summarised as 0/1 by counting, without a cast
    if kind is FeatureKind.INT and data_type != pa.int64():
        if pa.types.is_uint64(data_type):
            return FeatureKind.FLOAT, pc.cast(values, pa.float64())
        return kind, pc.cast(values, pa.int64())
    if kind is FeatureKind.FLOAT and data_type != pa.float64():
        return kind, pc.cast(values, pa.float64())
    if kind is FeatureKind.STRING:
        return kind, _as_text(name, values, uri=uri)
    return kind, values


def _as_text(name: str, values: pa.ChunkedArray, *, uri: str) -> pa.ChunkedArray:
    data_type = values.type
    if pa.types.is_string(data_type):
        return values
    if pa.types.is_dictionary(data_type) and pa.types.is_string(data_type.value_type):
        return values
    if pa.types.is_dictionary(data_type):
        values = pc.cast(values, data_type.value_type)
        data_type = values.type
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        try:
            return pc.cast(values, pa.string())
        except pa.ArrowInvalid:
            raise _first_invalid_utf8(name, values, uri=uri) from None
    return pc.cast(values, pa.string())


def _first_invalid_utf8(name: str, values: pa.ChunkedArray, *, uri: str) -> BadInputError:
    for index, raw in enumerate(values.to_pylist()):
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return BadInputError(
                "the value is not valid UTF-8 text",
                uri=uri,
                location=f"value #{index + 1} of column {name!r}",
            )
    return BadInputError("values are not valid UTF-8 text", uri=uri, location=f"column {name!r}")


def feature_column(
    name: str, column: pa.ChunkedArray, *, as_float: bool = False, uri: str = ""
) -> FeatureColumn:
    """Describe ``column`` as a feature; ``as_float`` reads integers as FLOAT (the schema's)."""
    rows = len(column)
    missing = column.null_count
    data_type = column.type
    lengths = None
    values = column
    if _is_list(data_type):
        lengths = _drop_nulls(pc.list_value_length(column))
        values = pc.list_flatten(column)
        data_type = data_type.value_type
    kind = _scalar_kind(data_type)
    if kind is None:
        raise BadInputError(
            f"column {name!r} has the nested type {column.type}; only scalars and lists of "
            "scalars can be features",
            uri=uri,
            location=f"column {name!r}",
        )
    kind, values = _canonical_values(name, _drop_nulls(values), kind, as_float=as_float, uri=uri)
    if kind is FeatureKind.NONE and lengths is None:
        missing = rows
    return FeatureColumn(
        kind=kind, values=values, present=rows - missing, missing=missing, lengths=lengths
    )
