"""A landed Parquet file's rows as record batches, with decompression and decoding bounded.

A Parquet file compresses page by page (snappy, gzip, zstd, brotli, lz4) and encodes
values with dictionaries and run lengths, so a file of a few hundred bytes can claim
gigabytes: a page of zeros that zstd shrinks thirty-thousand-fold, or a dictionary of one
1 MiB string repeated by 65,536 one-bit indices (64 GiB once decoded). pyarrow would
allocate either whole. Before any page is read this module checks the footer: every
column chunk at most ``MAX_COLUMN_CHUNK_BYTES`` once decompressed (a page is at most its
chunk) and the file at most ``validation.max_uncompressed_bytes`` in all. It then reads
string and binary columns with their dictionaries kept (``read_dictionary``), works out
what each batch would hold decoded (the dictionary's value lengths taken by the
indices, a few integers per row) and refuses a batch over ``MAX_DECODED_BATCH_BYTES``
before decoding it. Each refusal is bad input naming the file, the row group and the
column or rows, never a crash.

The footer's sizes are the writer's word: a file whose column chunk declares less than
its pages' headers do is read as pyarrow reads it (pages are decompressed one at a time
into the size their header declares).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped,unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.source import NETWORK_ERRORS, DataSource

__all__ = [
    "MAX_COLUMN_CHUNK_BYTES",
    "MAX_DECODED_BATCH_BYTES",
    "check_parquet_sizes",
    "read_parquet_batches",
]

MAX_COLUMN_CHUNK_BYTES = 512 << 20
"""Most bytes one column chunk may hold once decompressed: a quarter of the validate and
transform functions' 2 GiB (``tests/unit/validation/test_decompression_bombs.py`` checks
the topology). Files with larger chunks are written with smaller row groups."""
MAX_DECODED_BATCH_BYTES = 256 << 20
"""Most bytes the dictionary-encoded string and binary values of one batch may hold
once decoded."""


def check_parquet_sizes(metadata: pq.FileMetaData, config: ValidationConfig, uri: str) -> None:
    """Refuse, from the footer alone, a column chunk or a file too large once decompressed."""
    total = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            size = int(chunk.total_uncompressed_size)
            if size > MAX_COLUMN_CHUNK_BYTES:
                raise BadInputError(
                    f"the column chunk holds {size} bytes once decompressed, over the "
                    f"{MAX_COLUMN_CHUNK_BYTES}-byte limit ({chunk.total_compressed_size} "
                    "bytes compressed): refused before it is read (a decompression bomb, "
                    "or row groups too large: write smaller ones)",
                    uri=uri,
                    location=f"row group {group + 1}, column {chunk.path_in_schema!r}",
                )
            total += size
            if total > config.max_uncompressed_bytes:
                raise BadInputError(
                    f"the file holds more than {config.max_uncompressed_bytes} bytes once "
                    "decompressed (validation.max_uncompressed_bytes)",
                    uri=uri,
                    location=f"row group {group + 1}",
                )


def read_parquet_batches(source: DataSource, config: ValidationConfig) -> Iterator[pa.RecordBatch]:
    """The file's rows, row group by row group, in batches of ``parquet_batch_rows``."""
    with source.open() as raw:
        try:
            probe = pq.ParquetFile(raw)
        except NETWORK_ERRORS:
            raise
        except (pa.ArrowException, OSError) as error:
            raise BadInputError(f"not a valid Parquet file: {error}", uri=source.uri) from error
        metadata = probe.metadata
        if metadata.num_rows == 0:
            raise BadInputError("the Parquet file has no rows", uri=source.uri)
        check_parquet_sizes(metadata, config, source.uri)
        kept = _kept_as_dictionaries(probe.schema_arrow)
        rows = 0
        try:
            parquet = pq.ParquetFile(raw, metadata=metadata, read_dictionary=sorted(kept))
            for group in range(metadata.num_row_groups):
                for batch in parquet.iter_batches(
                    batch_size=config.parquet_batch_rows, row_groups=[group]
                ):
                    yield _decoded(batch, kept, source.uri, group, rows)
                    rows += batch.num_rows
        except NETWORK_ERRORS:
            raise
        except (pa.ArrowException, OSError) as error:
            raise BadInputError(
                f"cannot read Parquet data: {error}",
                uri=source.uri,
                location=f"row {rows + 1} or later",
            ) from error


def _kept_as_dictionaries(schema: pa.Schema) -> set[str]:
    """The top-level string and binary columns the file does not already read as
    dictionaries: read with their dictionary kept, decoded here once measured."""
    names = [field.name for field in schema]
    return {
        field.name
        for field in schema
        if names.count(field.name) == 1 and _is_bytes_like(field.type)
    }


def _is_bytes_like(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


def _decoded(
    batch: pa.RecordBatch, kept: set[str], uri: str, group: int, rows_before: int
) -> pa.RecordBatch:
    """``batch`` with the columns read as dictionaries decoded, once the decoded size of
    every dictionary column is known to be within ``MAX_DECODED_BATCH_BYTES``."""
    positions = [
        index
        for index, field in enumerate(batch.schema)
        if pa.types.is_dictionary(field.type) and _is_bytes_like(field.type.value_type)
    ]
    if not positions:
        return batch
    decoded_bytes = 0
    for index in positions:
        column = batch.column(index)
        lengths = pc.binary_length(column.dictionary)
        taken = pc.sum(pc.take(lengths, column.indices)).as_py() or 0
        decoded_bytes += int(taken)
        if decoded_bytes > MAX_DECODED_BATCH_BYTES:
            raise BadInputError(
                f"rows {rows_before + 1} to {rows_before + batch.num_rows} would hold more "
                f"than {MAX_DECODED_BATCH_BYTES} bytes of values once decoded (column "
                f"{batch.schema.names[index]!r}: {int(taken)} bytes from a dictionary of "
                f"{column.dictionary.nbytes}): refused before decoding (a dictionary bomb)",
                uri=uri,
                location=f"row group {group + 1}",
            )
    arrays = list(batch.columns)
    fields = list(batch.schema)
    # Columns the file itself types as dictionaries stay dictionaries, as pyarrow reads
    # them; their decoded size was measured all the same.
    for index in (i for i in positions if batch.schema.names[i] in kept):
        arrays[index] = arrays[index].dictionary_decode()
        fields[index] = fields[index].with_type(arrays[index].type)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, batch.schema.metadata))
