"""How many columns a file has, from its header: the ``feature_count`` check.

A file with thousands of columns costs minutes of statistics before any other check
can say anything about it, so its column count is read first, as cheaply as the
format allows: the first line of a CSV file (the header), the first record of a JSON
lines file, the footer of a Parquet file. The count from a header is a lower bound of
the columns the full read finds (a JSON lines file may add keys later; a header cut
at ``read_block_bytes`` counts what it holds), so refusing on it never refuses a file
that has few enough columns. Anything unreadable here is left to the full read, which
names the problem precisely.
"""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.validation_config import Check, ValidationConfig
from cascade.validation.findings import Finding, anomaly
from cascade.validation.names import FileFormat
from cascade.validation.source import NETWORK_ERRORS, DataSource, open_byte_stream
from cascade.validation.tfmd import anomalies_pb2

__all__ = ["feature_count_finding", "header_column_count"]

_PEEK_BYTES = 64 * 1024
_UNREADABLE = (BadInputError, pa.ArrowException, OSError, ValueError, csv.Error)


def feature_count_finding(
    uri: str, columns: int, config: ValidationConfig, *, from_header: bool
) -> Finding | None:
    """A ``feature_count`` finding when ``columns`` is over ``validation.max_features``."""
    if columns <= config.max_features:
        return None
    when = " (counted from its header; no statistics were computed)" if from_header else ""
    return anomaly(
        "",
        Check.FEATURE_COUNT,
        anomalies_pb2.AnomalyInfo.SCHEMA_NEW_COLUMN,
        "Too many columns",
        f"{uri} has {columns} columns, more than validation.max_features = "
        f"{config.max_features}{when}. A file this wide is refused before it can reach "
        "the baseline or the transform; if the columns are meant, raise "
        "validation.max_features in the dataset's pipeline config and take the new "
        "features into the schema (cascade schema accept-feature).",
    )


def header_column_count(source: DataSource, config: ValidationConfig) -> int | None:
    """The columns the file's header names (a lower bound), or None if it cannot tell."""
    try:
        if source.file_format is FileFormat.PARQUET:
            return _parquet_columns(source)
        first = _first_line(source, config)
        if first is None:
            return None
        if source.file_format in (FileFormat.CSV, FileFormat.CSV_GZIP):
            return _csv_columns(first, config)
        return _json_keys(first)
    except NETWORK_ERRORS:
        raise  # the transport failed: the step retries
    except _UNREADABLE:
        return None


def _parquet_columns(source: DataSource) -> int:
    with source.open() as raw:
        return len(pq.ParquetFile(raw).schema_arrow.names)


def _first_line(source: DataSource, config: ValidationConfig) -> bytes | None:
    """The bytes up to the first line break (or the first ``read_block_bytes``)."""
    limit = max(config.read_block_bytes, _PEEK_BYTES)
    held = bytearray()
    buffer = bytearray(_PEEK_BYTES)
    with open_byte_stream(source, config.max_uncompressed_bytes) as stream:
        while len(held) < limit:
            count = stream.readinto(memoryview(buffer))
            if count == 0:
                break
            end = buffer.find(b"\n", 0, count)
            if end >= 0:
                held += buffer[:end]
                return bytes(held)
            held += buffer[:count]
    return bytes(held) if held else None


def _csv_columns(line: bytes, config: ValidationConfig) -> int:
    text = line.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r")
    row = next(csv.reader(io.StringIO(text), delimiter=config.csv_delimiter), [])
    return len(row)


def _json_keys(line: bytes) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a first record cut at the peek limit, or not JSON: the read says
    return len(record) if isinstance(record, dict) else None
