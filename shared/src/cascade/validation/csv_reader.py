"""CSV in bounded blocks: each block of whole lines is parsed by ``pyarrow.csv.read_csv``.

Parsing blocks of a few MiB with Arrow's multi-threaded reader keeps memory bounded by
the block size and is about twice as fast as Arrow's streaming CSV reader. Column types
are inferred from the first block and fixed for the rest; a later value that does not
fit raises ``ColumnWidening`` so the caller restarts with the wider type.

A line break inside a quoted value would split a row between blocks; files that have
them need ``csv_newlines_in_values``, which uses Arrow's (slower) streaming reader.

One row must fit in ``read_block_bytes``: Arrow parses a block in pieces of 1 MiB (in
parallel); a block with a longer row is parsed again in pieces of ``read_block_bytes``,
and a row longer than that is refused naming the row and the setting to raise.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.csv as pacsv  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.diagnostics import (
    check_text_start,
    column_label,
    guard_line_limit,
    is_straddling,
    locate_invalid_utf8,
    locate_long_line,
    locate_ragged_row,
    long_line_error,
)
from cascade.validation.source import (
    BlockStream,
    DataSource,
    line_blocks,
    open_byte_stream,
    prepend,
)
from cascade.validation.widening import ColumnWidening, widened_type

__all__ = ["NULL_VALUES", "read_csv_batches"]

NULL_VALUES = ["", "NA", "N/A", "NULL", "null", "None"]
_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): CSV conversion error to (\w+)")
_SUSPECT_DELIMITERS = (";", "\t", "|")
_START_BYTES = 64 * 1024
_PARSE_PIECE_BYTES = 1 << 20


@dataclass
class _Position:
    """Where the next block starts: data rows before it, and its first file line if known.

    Lines are only known for the first block: counting line breaks in every block
    would cost more than the rest of the read, and errors name the data row anyway.
    """

    rows: int = 0
    line: int | None = 2
    header_read: bool = False

    def next_row(self) -> str:
        """Where the next block starts, for an error about its first line."""
        if not self.header_read:
            return "line 1 (the header) or row 1"
        return f"row {self.rows + 1}"


def read_csv_batches(
    source: DataSource, config: ValidationConfig, column_types: dict[str, pa.DataType]
) -> Iterator[pa.Table]:
    """Tables of one block each; ``column_types`` fixes the types of named columns."""
    with open_byte_stream(source, config.max_uncompressed_bytes) as stream:
        position = _Position()
        blocks = guard_line_limit(
            line_blocks(stream, config.read_block_bytes, uri=source.uri),
            uri=source.uri,
            block_bytes=config.read_block_bytes,
            where=position.next_row,
        )
        first_block = next(blocks, memoryview(b""))
        check_text_start(bytes(first_block[:_START_BYTES]), uri=source.uri)
        header, first_block = _split_header(first_block, uri=source.uri)
        position.header_read = True
        names = _parse_header(header, config.csv_delimiter, uri=source.uri)
        if config.csv_newlines_in_values:
            yield from _stream_with_arrow(first_block, blocks, names, config, source, column_types)
            return
        types = dict(column_types)
        for block in prepend(first_block, blocks):
            table = _parse_block(block, names, types, config, source.uri, position)
            _check_text_columns(table, block, names, config, source.uri, position)
            _fix_inferred_types(table, types)
            position.rows += table.num_rows
            position.line = None
            yield table
        if position.rows == 0:
            raise BadInputError(
                "the file has a header but no data rows", uri=source.uri, location="line 2"
            )


def _split_header(first_block: memoryview, *, uri: str) -> tuple[bytes, memoryview]:
    """The header line (without line break) and the rest of the first block."""
    end = bytes(first_block[:_START_BYTES]).find(b"\n")
    if end < 0:
        end = bytes(first_block).find(b"\n")
    if end < 0:
        header, rest = bytes(first_block), memoryview(b"")
    else:
        header, rest = bytes(first_block[:end]), first_block[end + 1 :]
    if not header.strip():
        raise BadInputError("the first line (the header) is empty", uri=uri, location="line 1")
    return header.rstrip(b"\r"), rest


def _parse_header(header: bytes, delimiter: str, *, uri: str) -> list[str]:
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise locate_invalid_utf8(
            header,
            first_line=1,
            rows_before=0,
            names=[],
            delimiter=delimiter,
            uri=uri,
            in_header=True,
        ) from None
    names = next(csv.reader([text], delimiter=delimiter))
    if len(names) == 1:
        _check_single_column_delimiter(names[0], delimiter, uri=uri)
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not name.strip():
            raise BadInputError(
                "the header has an empty column name",
                uri=uri,
                location=f"line 1, {column_label(names, index)}",
            )
        if name in seen:
            raise BadInputError(
                f"duplicate column name {name!r} (also column #{seen[name] + 1})",
                uri=uri,
                location=f"line 1, {column_label(names, index)}",
            )
        seen[name] = index
    return names


def _check_single_column_delimiter(name: str, delimiter: str, *, uri: str) -> None:
    for suspect in _SUSPECT_DELIMITERS:
        if suspect != delimiter and suspect in name:
            raise BadInputError(
                f"wrong delimiter: the header is one column containing {suspect!r}; the "
                f"file seems delimited by {suspect!r}, expected {delimiter!r} "
                "(validation.csv_delimiter)",
                uri=uri,
                location="line 1",
            )


def _read_options(names: list[str], piece_bytes: int) -> pacsv.ReadOptions:
    return pacsv.ReadOptions(column_names=names, use_threads=True, block_size=piece_bytes)


_NO_TIMESTAMPS = ["\x00"]
"""Arrow's timestamp parsers: one that never matches (no value of a file Cascade reads
holds a NUL byte). A timestamp column stays the text the file holds, as it does when
the schema says BYTES: parsed on the dataset's first file only, its values would be
written back as ``2013-03-01 10:00:00Z`` and never equal a later file's
``2013-03-01T10:00:00Z`` (every value unseen, a domain broken every period)."""


def _convert_options(types: dict[str, pa.DataType]) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types=types,
        null_values=NULL_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        timestamp_parsers=_NO_TIMESTAMPS,
    )


def _parse_block(
    block: memoryview,
    names: list[str],
    types: dict[str, pa.DataType],
    config: ValidationConfig,
    uri: str,
    position: _Position,
) -> pa.Table:
    pieces = [_PARSE_PIECE_BYTES]
    if config.read_block_bytes > _PARSE_PIECE_BYTES:
        pieces.append(config.read_block_bytes)  # a row over 1 MiB: parse in larger pieces
    for piece_bytes in pieces:
        try:
            return pacsv.read_csv(
                pa.BufferReader(pa.py_buffer(block)),
                read_options=_read_options(names, piece_bytes),
                parse_options=pacsv.ParseOptions(delimiter=config.csv_delimiter),
                convert_options=_convert_options(types),
            )
        except pa.ArrowInvalid as error:
            if is_straddling(error) and piece_bytes != pieces[-1]:
                continue
            raise _explain(error, block, names, types, config, uri, position) from error
    raise AssertionError("unreachable: the last piece size returns or raises")


def _explain(
    error: pa.ArrowInvalid,
    block_view: memoryview,
    names: list[str],
    types: dict[str, pa.DataType],
    config: ValidationConfig,
    uri: str,
    position: _Position,
) -> Exception:
    """The BadInputError (or ColumnWidening) that explains an Arrow parse failure."""
    message = str(error)
    delimiter = config.csv_delimiter
    block = bytes(block_view)
    if is_straddling(error):
        return _long_row(block, config, uri, position)
    if "Expected" in message and "columns" in message:
        return locate_ragged_row(
            block,
            first_line=position.line,
            rows_before=position.rows,
            names=names,
            delimiter=delimiter,
            uri=uri,
        )
    if "invalid UTF8" in message:
        return locate_invalid_utf8(
            block,
            first_line=position.line,
            rows_before=position.rows,
            names=names,
            delimiter=delimiter,
            uri=uri,
        )
    conversion = _CONVERSION_ERROR.search(message)
    if conversion:
        name = names[int(conversion.group(1))]
        return ColumnWidening(name, widened_type(types.get(name), message))
    return BadInputError(
        f"cannot parse CSV: {message}", uri=uri, location=f"row {position.rows + 1} or later"
    )


def _long_row(
    block: bytes, config: ValidationConfig, uri: str, position: _Position
) -> BadInputError:
    """The row of ``block`` too long for the parse pieces, named with the setting."""
    limit = max(config.read_block_bytes, _PARSE_PIECE_BYTES)
    found = locate_long_line(iter(block.split(b"\n")), limit=limit - 1, skip_empty=True)
    if found is None:
        where, length = f"row {position.rows + 1} or later", None
    else:
        row, line, length = found
        where = f"row {position.rows + row}"
        if position.line is not None:
            where += f" (line {position.line + line - 1})"
    return long_line_error(uri=uri, where=where, block_bytes=config.read_block_bytes, length=length)


def _check_text_columns(
    table: pa.Table,
    block: memoryview,
    names: list[str],
    config: ValidationConfig,
    uri: str,
    position: _Position,
) -> None:
    """Arrow infers ``binary`` for a column with bytes that are not UTF-8: locate them."""
    if any(pa.types.is_binary(field.type) for field in table.schema):
        raise locate_invalid_utf8(
            bytes(block),
            first_line=position.line,
            rows_before=position.rows,
            names=names,
            delimiter=config.csv_delimiter,
            uri=uri,
        )


def _fix_inferred_types(table: pa.Table, types: dict[str, pa.DataType]) -> None:
    """Keep the first non-null type inferred for each column for the following blocks."""
    for field in table.schema:
        if field.name not in types and not pa.types.is_null(field.type):
            types[field.name] = field.type


def _stream_with_arrow(
    first_block: memoryview,
    blocks: Iterator[memoryview],
    names: list[str],
    config: ValidationConfig,
    source: DataSource,
    column_types: dict[str, pa.DataType],
) -> Iterator[pa.Table]:
    """Arrow's streaming reader, which keeps quoted line breaks inside values."""
    chunks = prepend(first_block, blocks)
    reader = pacsv.open_csv(
        pa.PythonFile(BlockStream(chunks), mode="r"),
        read_options=pacsv.ReadOptions(column_names=names, block_size=config.read_block_bytes),
        parse_options=pacsv.ParseOptions(delimiter=config.csv_delimiter, newlines_in_values=True),
        convert_options=_convert_options(column_types),
    )
    rows = 0
    try:
        for batch in reader:
            rows += batch.num_rows
            yield pa.Table.from_batches([batch])
    except pa.ArrowInvalid as error:
        if is_straddling(error):
            raise long_line_error(
                uri=source.uri, where=f"after row {rows}", block_bytes=config.read_block_bytes
            ) from error
        conversion = _CONVERSION_ERROR.search(str(error))
        if conversion:
            name = names[int(conversion.group(1))]
            raise ColumnWidening(name, widened_type(column_types.get(name), str(error))) from error
        raise BadInputError(
            f"cannot parse CSV: {error}", uri=source.uri, location=f"after row {rows}"
        ) from error
    if rows == 0:
        raise BadInputError(
            "the file has a header but no data rows", uri=source.uri, location="line 2"
        )
