"""Record batches of a data file in any supported format, in bounded memory.

CSV (also gzip) is parsed in blocks of whole lines (``csv_reader``), newline-delimited
JSON with Arrow's streaming JSON reader, Parquet row group by row group, a stream's Avro
file message by message (``avro_reader``: unusable records split out). The size
limit is checked before the first byte is read. Every problem with the bytes becomes
a BadInputError naming the file and, where it can be known, the line and column.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.json as pajson  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.store import encoding_problem
from cascade.core.validation_config import ValidationConfig
from cascade.validation.avro_reader import read_avro_batches
from cascade.validation.csv_reader import read_csv_batches
from cascade.validation.diagnostics import (
    check_text_start,
    guard_line_limit,
    is_straddling,
    locate_long_line,
    long_line_error,
)
from cascade.validation.names import FileFormat
from cascade.validation.parquet_reader import read_parquet_batches
from cascade.validation.source import (
    BlockStream,
    DataSource,
    line_blocks,
    open_byte_stream,
    prepend,
)

__all__ = ["check_size", "read_batches"]


def check_size(source: DataSource, config: ValidationConfig) -> None:
    """Refuse a file over ``max_file_size_bytes`` (or of size 0), a file stored under an
    encoding Cloud Storage does not decompress, or a Parquet or Avro file stored
    gzip-encoded, before reading it."""
    problem = encoding_problem(source.content_encoding)
    if problem:
        raise BadInputError(problem, uri=source.uri)
    if source.gzip_encoded and source.file_format in (FileFormat.PARQUET, FileFormat.AVRO):
        raise BadInputError(
            f"the object is stored with Content-Encoding: {source.content_encoding} "
            f"({source.file_format.value} compresses inside the file and is read by byte "
            "ranges, which a gzip-encoded object does not serve): upload the file as it is, "
            "without Content-Encoding (no -Z or -j on `gcloud storage cp`)",
            uri=source.uri,
        )
    if source.size is None:
        return
    if source.size == 0:
        raise BadInputError("the file is empty (0 bytes)", uri=source.uri)
    if source.size > config.max_file_size_bytes:
        raise BadInputError(
            f"the file is {source.size} bytes, over the {config.max_file_size_bytes}-byte "
            "limit (validation.max_file_size_bytes)",
            uri=source.uri,
        )


def read_batches(
    source: DataSource,
    config: ValidationConfig,
    column_types: dict[str, pa.DataType] | None = None,
    *,
    message_ids: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The file's rows as record batches; ``column_types`` fixes CSV column types;
    ``message_ids`` adds a stream file's message ids (``avro_reader.MESSAGE_ID_COLUMN``)."""
    check_size(source, config)
    if source.file_format in (FileFormat.CSV, FileFormat.CSV_GZIP):
        return read_csv_batches(source, config, dict(column_types or {}))
    if source.file_format is FileFormat.PARQUET:
        return _read_parquet(source, config)
    if source.file_format is FileFormat.AVRO:
        return read_avro_batches(
            source, config, dict(column_types or {}), with_message_ids=message_ids
        )
    return _read_ndjson(source, config)


def _read_parquet(source: DataSource, config: ValidationConfig) -> Iterator[pa.RecordBatch]:
    # Decompression and dictionary decoding bounded (parquet_reader).
    return read_parquet_batches(source, config)


def _read_ndjson(source: DataSource, config: ValidationConfig) -> Iterator[pa.RecordBatch]:
    rows = 0
    with open_byte_stream(source, config.max_uncompressed_bytes) as stream:
        blocks = guard_line_limit(
            line_blocks(stream, config.read_block_bytes, uri=source.uri),
            uri=source.uri,
            block_bytes=config.read_block_bytes,
            where=lambda: f"line {rows + 1} or later",
        )
        first_block = next(blocks, memoryview(b""))
        check_text_start(bytes(first_block[:65536]), uri=source.uri)
        try:
            reader = pajson.open_json(
                pa.PythonFile(BlockStream(prepend(first_block, blocks)), mode="r"),
                read_options=pajson.ReadOptions(block_size=config.read_block_bytes),
            )
            for batch in reader:
                rows += batch.num_rows
                yield batch
        except pa.ArrowInvalid as error:
            if is_straddling(error):
                raise _locate_long_json_line(source, config, rows) from error
            raise _locate_json_error(source, config, error) from error
    if rows == 0:
        raise BadInputError("the file has no JSON records", uri=source.uri)


def _locate_json_error(
    source: DataSource, config: ValidationConfig, error: pa.ArrowInvalid
) -> BadInputError:
    """Re-read the file line by line to find the first line that is not a JSON object."""
    line_number = 0
    with open_byte_stream(source, config.max_uncompressed_bytes) as stream:
        for block in line_blocks(stream, config.read_block_bytes, uri=source.uri):
            for line in bytes(block).splitlines():
                line_number += 1
                problem = _json_line_problem(line)
                if problem:
                    return BadInputError(problem, uri=source.uri, location=f"line {line_number}")
    return BadInputError(f"cannot read newline-delimited JSON: {error}", uri=source.uri)


def _locate_long_json_line(
    source: DataSource, config: ValidationConfig, rows: int
) -> BadInputError:
    """Arrow's JSON reader met a record longer than its block: name its line."""
    limit = config.read_block_bytes
    with open_byte_stream(source, config.max_uncompressed_bytes) as stream:
        blocks = line_blocks(stream, config.read_block_bytes, uri=source.uri)
        lines = (line for block in blocks for line in _lines_of(bytes(block)))
        found = locate_long_line(lines, limit=limit - 1, skip_empty=False)
    if found is None:
        return long_line_error(uri=source.uri, where=f"line {rows + 1} or later", block_bytes=limit)
    _, line, length = found
    return long_line_error(uri=source.uri, where=f"line {line}", block_bytes=limit, length=length)


def _lines_of(block: bytes) -> list[bytes]:
    """The lines of a block of whole lines (the file's last may lack its break)."""
    lines = block.split(b"\n")
    return lines[:-1] if block.endswith(b"\n") else lines


def _json_line_problem(line: bytes) -> str:
    if not line.strip():
        return ""
    try:
        value = json.loads(line)
    except UnicodeDecodeError:
        return "the line is not valid UTF-8"
    except ValueError as error:
        return f"not valid JSON: {error}"
    if not isinstance(value, dict):
        return f"each line must be a JSON object, got {type(value).__name__}"
    return ""
