"""Pinpointing bad input: the line, row and column behind a reader error.

These run only after a fast reader has failed, on the block of bytes it failed on,
so they may be simple Python: their job is a message a person can act on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator

from cascade.core.errors import BadInputError

__all__ = [
    "BINARY_SIGNATURES",
    "check_text_start",
    "column_label",
    "guard_line_limit",
    "is_straddling",
    "locate_invalid_utf8",
    "locate_long_line",
    "locate_ragged_row",
    "long_line_error",
]

BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed data (name the file .csv.gz or .ndjson.gz)"),
    (b"PAR1", "a Parquet file (name it .parquet)"),
    (b"PK\x03\x04", "a ZIP archive or Excel workbook (export it as CSV)"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"


def column_label(names: list[str], index: int) -> str:
    """``column 'price' (3rd)``, or the position alone when the header has no such column."""
    position = index + 1
    if 0 <= index < len(names):
        return f"column {names[index]!r} (#{position})"
    return f"column #{position}"


def check_text_start(first_block: bytes, *, uri: str) -> None:
    """Refuse a text file that is empty, binary, or starts with a byte-order mark."""
    if not first_block:
        raise BadInputError("the file is empty (0 bytes)", uri=uri)
    for signature, what in BINARY_SIGNATURES:
        if first_block.startswith(signature):
            raise BadInputError(f"this is a binary file: {what}", uri=uri, location="line 1")
    if first_block.startswith(_UTF8_BOM):
        raise BadInputError(
            "the file starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without BOM",
            uri=uri,
            location="line 1, column #1",
        )
    if first_block.startswith(_UTF16_32_BOMS):
        raise BadInputError(
            "the file starts with a UTF-16/UTF-32 byte-order mark; save it as UTF-8",
            uri=uri,
            location="line 1, column #1",
        )
    nul_offset = first_block.find(b"\x00")
    if nul_offset >= 0:
        line = first_block.count(b"\n", 0, nul_offset) + 1
        raise BadInputError(
            f"this is a binary file: NUL byte at byte offset {nul_offset}",
            uri=uri,
            location=f"line {line}",
        )


def _fields_before(line_prefix: str, delimiter: str) -> int:
    """How many delimiters separate fields in ``line_prefix`` (quotes respected)."""
    rows = list(csv.reader([line_prefix], delimiter=delimiter))
    return max(len(rows[0]) - 1, 0) if rows else 0


def _where(rows_before: int, rows_into_block: int, first_line: int | None, lines: int) -> str:
    """``row N`` (data rows, header excluded), with the file line when it is known."""
    row = f"row {rows_before + rows_into_block}"
    return f"{row} (line {first_line + lines})" if first_line is not None else row


def locate_invalid_utf8(
    block: bytes,
    *,
    first_line: int | None,
    rows_before: int,
    names: list[str],
    delimiter: str,
    uri: str,
    in_header: bool = False,
) -> BadInputError:
    """The error for the first byte of ``block`` that is not UTF-8.

    ``first_line`` is the file line of the block's first line (None when unknown);
    ``rows_before`` the data rows read before the block.
    """
    try:
        block.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start
    else:
        return BadInputError("the file is not valid UTF-8 text", uri=uri)
    line_start = block.rfind(b"\n", 0, offset) + 1
    prefix = block[line_start:offset].decode("utf-8", errors="replace")
    column = column_label(names, _fields_before(prefix, delimiter))
    lines_before = block.count(b"\n", 0, offset)
    if in_header:
        where = "line 1 (the header)"
    else:
        rows_into_block = len([line for line in block[:line_start].splitlines() if line]) + 1
        where = _where(rows_before, rows_into_block, first_line, lines_before)
    return BadInputError(
        f"byte 0x{block[offset]:02x} is not valid UTF-8: save the file as UTF-8",
        uri=uri,
        location=f"{where}, {column}",
    )


def locate_ragged_row(
    block: bytes,
    *,
    first_line: int | None,
    rows_before: int,
    names: list[str],
    delimiter: str,
    uri: str,
) -> BadInputError:
    """The error for the first row of ``block`` whose field count differs from the header."""
    text = block.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows_into_block = 0
    for fields in reader:
        if not fields:
            continue
        rows_into_block += 1
        if len(fields) != len(names):
            problem = "missing" if len(fields) < len(names) else "extra"
            column = column_label(names, min(len(fields), len(names)))
            where = _where(rows_before, rows_into_block, first_line, reader.line_num - 1)
            return BadInputError(
                f"ragged row: expected {len(names)} fields like the header, got "
                f"{len(fields)} ({problem} values from {column})",
                uri=uri,
                location=where,
            )
    return BadInputError(
        "rows do not match the header's field count (a quoted value may contain a line "
        "break: set validation.csv_newlines_in_values)",
        uri=uri,
        location=f"after row {rows_before}",
    )


_LINE_LIMIT = "a line is longer than"
"""How ``source.line_blocks`` words a line it gave up on (16 blocks without a break)."""
_MAX_BLOCK_SETTING = "256 MiB"


def is_straddling(error: Exception) -> bool:
    """Arrow's way of saying that one row did not fit in its parse block."""
    return "straddling object" in str(error)


def long_line_error(
    *, uri: str, where: str, block_bytes: int, length: int | None = None
) -> BadInputError:
    """A row too long for ``validation.read_block_bytes``, in words a person can act on."""
    size = f"{length} bytes long" if length is not None else "too long to read"
    raise_to = f"above {length} bytes" if length is not None else "above the row's length"
    return BadInputError(
        f"the row is {size}: one row must fit in validation.read_block_bytes "
        f"({block_bytes} bytes); raise validation.read_block_bytes {raise_to} "
        f"(at most {_MAX_BLOCK_SETTING}) in the dataset's pipeline config, or split the row",
        uri=uri,
        location=where,
    )


def guard_line_limit(
    blocks: Iterator[memoryview], *, uri: str, block_bytes: int, where: Callable[[], str]
) -> Iterator[memoryview]:
    """``blocks``, with the reader's give-up on an endless line named by row and setting.

    ``where`` says where the next block starts (``row N``), asked when the error comes.
    """
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except BadInputError as error:
            if _LINE_LIMIT not in str(error):
                raise
            raise long_line_error(uri=uri, where=where(), block_bytes=block_bytes) from error
        yield block


def locate_long_line(
    lines: Iterator[bytes], *, limit: int, skip_empty: bool
) -> tuple[int, int, int] | None:
    """The first line longer than ``limit`` bytes: (row, line, length), 1-based.

    ``row`` counts non-empty lines when ``skip_empty`` (CSV rows), else every line.
    """
    row = 0
    for line_number, line in enumerate(lines, start=1):
        if skip_empty and not line.strip(b"\r"):
            continue
        row += 1
        if len(line) > limit:
            return row, line_number, len(line)
    return None
