"""A text file cut into byte ranges of whole lines, each readable on its own.

A line belongs to the range its first byte lies in; the header (CSV) is the file's
first line and is prepended to every range, so each range is a small CSV file of its
own that the validation readers parse unchanged. A Parquet file is cut between row
groups instead (``row_group_ranges``, ``parquet_range_batches``). Files that cannot be
cut (gzip, Avro, CSV with line breaks inside quoted values) are one range.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.names import FileFormat
from cascade.validation.source import NETWORK_ERRORS, DataSource

__all__ = [
    "ByteRange",
    "block_ranges",
    "block_source",
    "is_splittable",
    "parquet_range_batches",
    "read_range",
    "row_group_ranges",
]

_HEADER_SEARCH_BYTES = 1 << 20

SeekableOpener = Callable[[], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True)
class ByteRange:
    """Lines starting in ``[start, end)`` of the file; ``index`` orders the ranges."""

    index: int
    start: int
    end: int


def is_splittable(file_format: FileFormat, config: ValidationConfig) -> bool:
    """Plain CSV and NDJSON without line breaks inside values can be cut at any line,
    Parquet between row groups."""
    if file_format is FileFormat.CSV:
        return not config.csv_newlines_in_values
    return file_format in (FileFormat.NDJSON, FileFormat.PARQUET)


def header_end(raw: BinaryIO, file_format: FileFormat, *, uri: str) -> int:
    """The offset of the first data line: after the header line (CSV), 0 otherwise."""
    if file_format is not FileFormat.CSV:
        return 0
    raw.seek(0)
    head = raw.read(_HEADER_SEARCH_BYTES)
    cut = head.find(b"\n")
    if cut < 0:
        if len(head) == _HEADER_SEARCH_BYTES:
            raise BadInputError(
                f"the header line is longer than {_HEADER_SEARCH_BYTES} bytes",
                uri=uri,
                location="line 1",
            )
        return len(head)
    return cut + 1


def block_ranges(size: int, first_line: int, block_bytes: int) -> list[ByteRange]:
    """Ranges of about ``block_bytes`` covering ``[first_line, size)``; at least one."""
    if block_bytes <= 0:
        raise ValueError("block_bytes must be positive")
    starts = list(range(first_line, size, block_bytes)) or [first_line]
    return [
        ByteRange(index=index, start=start, end=min(start + block_bytes, size))
        for index, start in enumerate(starts)
    ]


def read_range(raw: BinaryIO, block: ByteRange, first_line: int) -> bytes:
    """The whole lines of ``raw`` that start in ``block`` (a seekable binary file)."""
    position = block.start
    if position > first_line:
        raw.seek(position - 1)
        raw.readline()  # the rest of the line the range starts inside of
        position = raw.tell()
    if position >= block.end:
        return b""
    raw.seek(position)
    data = raw.read(block.end - position)
    if data and not data.endswith(b"\n"):
        data += raw.readline()  # the last line started inside the range
    return data


def block_source(uri: str, file_format: FileFormat, header: bytes, body: bytes) -> DataSource:
    """One range as a file of its own: the header line (if any) then the range's lines."""
    content = header + body

    def opener() -> AbstractContextManager[BinaryIO]:
        return io.BytesIO(content)

    return DataSource(uri=uri, file_format=file_format, size=len(content), open=opener)


def _parquet_file(raw: BinaryIO, *, uri: str) -> pq.ParquetFile:
    """The file's Parquet reader, refused as the validation reader refuses it."""
    try:
        return pq.ParquetFile(raw)
    except NETWORK_ERRORS:
        raise
    except (pa.ArrowException, OSError) as error:
        raise BadInputError(f"not a valid Parquet file: {error}", uri=uri) from error


def row_group_ranges(raw: BinaryIO, block_bytes: int, *, uri: str) -> list[ByteRange]:
    """Consecutive row groups of about ``block_bytes`` (compressed) each: ``start`` and
    ``end`` are row group numbers here, not bytes."""
    metadata = _parquet_file(raw, uri=uri).metadata
    if metadata.num_rows == 0:
        raise BadInputError("the Parquet file has no rows", uri=uri)
    ranges: list[ByteRange] = []
    first, size = 0, 0
    for group in range(metadata.num_row_groups):
        size += metadata.row_group(group).total_byte_size
        if size >= block_bytes or group == metadata.num_row_groups - 1:
            ranges.append(ByteRange(index=len(ranges), start=first, end=group + 1))
            first, size = group + 1, 0
    return ranges


def parquet_range_batches(
    open_raw: SeekableOpener, block: ByteRange, config: ValidationConfig, *, uri: str
) -> Iterator[pa.RecordBatch]:
    """The rows of row groups ``[block.start, block.end)`` in batches of
    ``parquet_batch_rows``, errors worded as the validation reader words them."""
    with open_raw() as raw:
        parquet = _parquet_file(raw, uri=uri)
        try:
            yield from parquet.iter_batches(
                batch_size=config.parquet_batch_rows,
                row_groups=list(range(block.start, block.end)),
            )
        except NETWORK_ERRORS:
            raise
        except (pa.ArrowException, OSError) as error:
            raise BadInputError(f"cannot read Parquet data: {error}", uri=uri) from error
