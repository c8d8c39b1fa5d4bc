"""Stream the snapshot's files into train/eval Parquet shards.

Each file is read at its pinned generation in bounded record batches (the validation
readers: CSV, gzip CSV, Parquet, NDJSON), its columns cast to the shard schema, each
row sent to train or eval by its hash, and the rows appended to the split's writer.
Memory holds one batch and one open shard per split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.store import ArtifactStore
from cascade.core.validation_config import ValidationConfig
from cascade.transform.shard_columns import canonical_table
from cascade.transform.shards import ShardWriter
from cascade.transform.snapshot import ObjectOpener, split_gs_uri
from cascade.transform.spec import SnapshotFile, SplitSpec
from cascade.transform.split import eval_mask
from cascade.validation.names import file_format_of
from cascade.validation.reader import read_batches
from cascade.validation.source import DataSource
from cascade.validation.widening import ColumnWidening

__all__ = ["DEFAULT_ROWS_PER_SHARD", "SplitShards", "file_batches", "write_split_shards"]

DEFAULT_ROWS_PER_SHARD = 500_000
_MAX_RESTARTS = 64


@dataclass(frozen=True)
class SplitShards:
    train_names: list[str]
    eval_names: list[str]
    train_rows: int
    eval_rows: int


def _source(file: SnapshotFile, opener: ObjectOpener) -> DataSource:
    _, name = split_gs_uri(file.uri)
    uri = f"{file.uri}#{file.generation}"
    return DataSource(
        uri=uri,
        file_format=file_format_of(name, uri=uri),
        size=opener.size(file.uri, file.generation),
        open=lambda: opener.open(file.uri, file.generation),
    )


def _read_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {field.name: field.type for field in schema}


def file_batches(
    file: SnapshotFile, opener: ObjectOpener, schema: pa.Schema, config: ValidationConfig
) -> Iterator[pa.Table]:
    """The file's rows as tables of ``schema``, in file order.

    Columns outside the schema are read with the types the reader infers; when one of
    them turns out wider (``ColumnWidening``), the file is read again with the wider
    type and the rows already produced are skipped, so each row comes out once.
    """
    source = _source(file, opener)
    column_types = _read_types(schema)
    produced = 0
    for _ in range(_MAX_RESTARTS):
        seen = 0
        try:
            for batch in read_batches(source, config, column_types):
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                fresh = table.slice(produced - seen) if seen < produced else table
                seen += table.num_rows
                if seen <= produced:
                    continue
                produced = seen
                yield canonical_table(fresh, schema, uri=source.uri)
            return
        except ColumnWidening as widening:
            if widening.column in schema.names:
                raise BadInputError(
                    f"column {widening.column!r} has a value that is not "
                    f"{schema.field(widening.column).type}",
                    uri=source.uri,
                    location=f"column {widening.column!r}",
                ) from widening
            column_types[widening.column] = widening.new_type
    raise BadInputError(f"column types did not settle after {_MAX_RESTARTS} reads", uri=source.uri)


def write_split_shards(
    store: ArtifactStore,
    files: list[SnapshotFile],
    opener: ObjectOpener,
    *,
    schema: pa.Schema,
    split: SplitSpec,
    folder: str,
    config: ValidationConfig,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
) -> SplitShards:
    """Write ``folder``/train/part-*.parquet and ``folder``/eval/part-*.parquet."""
    train = ShardWriter(store, f"{folder}/train", schema, rows_per_shard=rows_per_shard)
    evaluation = ShardWriter(store, f"{folder}/eval", schema, rows_per_shard=rows_per_shard)
    for file in files:
        for table in file_batches(file, opener, schema, config):
            mask = pa.array(eval_mask(table, split))
            evaluation.write(table.filter(mask))
            train.write(table.filter(pc.invert(mask)))
    return SplitShards(
        train_names=train.close(),
        eval_names=evaluation.close(),
        train_rows=train.rows,
        eval_rows=evaluation.rows,
    )
