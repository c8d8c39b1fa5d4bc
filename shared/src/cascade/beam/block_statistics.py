"""The statistics of one range of a file, and how ranges agree on column types.

Each range is summarised with the validation package's own readers and per-batch
summaries (``cascade.validation.statistics.summarize_batches``); ranges merge with
``DatasetSummary.merged``, as the batches of one file do in a function.

Column types: a function infers a text file's types from its first block and widens a
column when a later value does not fit (integers meeting a decimal become float64,
anything else a string), restarting the read. The widening is a join: the final type
of a column is the join of the types each range infers on its own. A range that
inferred a narrower type than the join is summarised again with the joined types, so
every range is read with the types the function would have ended with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.reader import read_batches
from cascade.validation.source import DataSource
from cascade.validation.statistics import summarize_batches
from cascade.validation.summaries import DatasetSummary
from cascade.validation.widening import ColumnWidening

__all__ = [
    "BlockError",
    "BlockSummary",
    "joined_type",
    "joined_types",
    "needs_reread",
    "source_reader",
    "summarize_block",
]

_MAX_RESTARTS = 64
_ROW = re.compile(r"\brow (\d+)")
_LINE = re.compile(r" \(line \d+\)")


@dataclass(frozen=True)
class BlockError:
    """A BadInputError of one range, in parts: ``location`` counts rows from the range."""

    uri: str
    location: str
    message: str

    @classmethod
    def of(cls, error: BadInputError) -> BlockError:
        prefix = " ".join(part for part in (error.uri, error.location) if part)
        message = str(error)[len(prefix) + 2 :] if prefix else str(error)
        return cls(uri=error.uri, location=error.location, message=message)

    def in_file(self, rows_before: int) -> str:
        """The message a function's read names: rows counted from the file's start.

        File lines are known only before the first range's end (as in a function's
        read, which counts lines in its first block only), so later ranges name rows.
        """
        location = self.location
        if rows_before:
            location = _ROW.sub(lambda found: f"row {int(found[1]) + rows_before}", location)
            location = _LINE.sub("", location)
        return str(BadInputError(self.message, uri=self.uri, location=location))


@dataclass(frozen=True)
class BlockSummary:
    """One range's summary and the non-null type each column was read with; or the
    first problem of its bytes (``error``), with the range's ``index``."""

    index: int
    summary: DatasetSummary
    types: dict[str, pa.DataType]
    error: BlockError | None = None


def joined_type(left: pa.DataType | None, right: pa.DataType | None) -> pa.DataType | None:
    """The narrowest type both fit: equal types stay, numbers join to float64, else string."""
    if left is None or pa.types.is_null(left):
        return right
    if right is None or pa.types.is_null(right) or left.equals(right):
        return left
    numeric = (pa.types.is_integer(t) or pa.types.is_floating(t) for t in (left, right))
    return pa.float64() if all(numeric) else pa.string()


def joined_types(
    left: Mapping[str, pa.DataType], right: Mapping[str, pa.DataType]
) -> dict[str, pa.DataType]:
    joined = dict(left)
    for name, data_type in right.items():
        result = joined_type(joined.get(name), data_type)
        if result is not None:
            joined[name] = result
    return joined


def needs_reread(block: BlockSummary, final_types: Mapping[str, pa.DataType]) -> bool:
    """True when a column of ``block`` was read narrower than the file's final type."""
    return any(
        name in final_types and not data_type.equals(final_types[name])
        for name, data_type in block.types.items()
    )


def _observed(
    batches: Iterator[pa.RecordBatch | pa.Table], types: dict[str, pa.DataType]
) -> Iterator[pa.RecordBatch | pa.Table]:
    for batch in batches:
        for field in batch.schema:
            if field.name not in types and not pa.types.is_null(field.type):
                types[field.name] = field.type
        yield batch


BatchReader = Callable[[dict[str, pa.DataType]], Iterator[pa.RecordBatch | pa.Table]]
"""Reads one range's rows with the given column types (text formats only use them)."""


def source_reader(source: DataSource, config: ValidationConfig) -> BatchReader:
    """A range that is a file of its own, read by the validation readers."""
    return lambda types: read_batches(source, config, types)


def summarize_block(
    read: BatchReader,
    config: ValidationConfig,
    *,
    uri: str,
    index: int,
    column_types: Mapping[str, pa.DataType],
    float_features: frozenset[str],
) -> BlockSummary:
    """Summarise one range read as its own file, widening as a function's read does.

    A problem with the bytes is returned, not raised (Beam would retry a raised error);
    its rows count from the range's first line until the merge knows the rows before.
    """
    fixed = dict(column_types)
    for _ in range(_MAX_RESTARTS):
        observed: dict[str, pa.DataType] = {}
        try:
            batches = _observed(read(fixed), observed)
            summary = summarize_batches(batches, config, uri=uri, float_features=float_features)
        except ColumnWidening as widening:
            fixed[widening.column] = widening.new_type
            continue
        except BadInputError as error:
            return BlockSummary(index, DatasetSummary(), {}, BlockError.of(error))
        return BlockSummary(index, summary, observed)
    unsettled = BadInputError(f"column types did not settle after {_MAX_RESTARTS} reads", uri=uri)
    return BlockSummary(index, DatasetSummary(), {}, BlockError.of(unsettled))
