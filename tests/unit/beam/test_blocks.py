"""Ranges of whole lines: every data line in exactly one range, whatever the cut."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest

from cascade.beam.block_statistics import BlockError, joined_type, joined_types
from cascade.beam.blocks import block_ranges, header_end, read_range
from cascade.core.errors import BadInputError
from cascade.validation.names import FileFormat

CONTENT = b"a,b\n" + b"".join(f"{i},{'x' * (i % 13)}\n".encode() for i in range(500)) + b"9,last"


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 7, 50, 333, 4096, 10**6])
def test_ranges_hold_every_data_line_once_in_order(block_bytes: int) -> None:
    raw = io.BytesIO(CONTENT)
    first_line = header_end(raw, FileFormat.CSV, uri="gs://b/o")

    ranges = block_ranges(len(CONTENT), first_line, block_bytes)
    pieces = [read_range(raw, block, first_line) for block in ranges]

    assert first_line == 4
    assert b"".join(pieces) == CONTENT[first_line:]
    filled = [piece for piece in pieces if piece]
    assert all(piece.endswith(b"\n") for piece in filled[:-1])


def test_a_header_only_file_has_one_empty_range() -> None:
    raw = io.BytesIO(b"a,b\n")
    first_line = header_end(raw, FileFormat.CSV, uri="gs://b/o")

    ranges = block_ranges(4, first_line, 100)

    assert [read_range(raw, block, first_line) for block in ranges] == [b""]


def test_ndjson_has_no_header() -> None:
    assert header_end(io.BytesIO(b'{"a": 1}\n'), FileFormat.NDJSON, uri="gs://b/o") == 0


def test_a_header_without_end_is_refused_by_name() -> None:
    with pytest.raises(BadInputError, match=r"gs://b/o line 1: the header line is longer"):
        header_end(io.BytesIO(b"a" * (1 << 21)), FileFormat.CSV, uri="gs://b/o")


@pytest.mark.parametrize("block_bytes", [0, -5])
def test_a_range_size_must_be_positive(block_bytes: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        block_ranges(10, 0, block_bytes)


@pytest.mark.parametrize(
    ("left", "right", "joined"),
    [
        (pa.int64(), pa.int64(), pa.int64()),
        (pa.int64(), pa.float64(), pa.float64()),
        (pa.float64(), pa.int64(), pa.float64()),
        (pa.int64(), pa.string(), pa.string()),
        (pa.bool_(), pa.int64(), pa.string()),
        (pa.null(), pa.int64(), pa.int64()),
        (pa.bool_(), None, pa.bool_()),
    ],
)
def test_types_join_as_a_function_read_widens(
    left: pa.DataType, right: pa.DataType | None, joined: pa.DataType
) -> None:
    assert joined_type(left, right) == joined
    assert joined_type(right, left) == joined


def test_joined_types_keep_columns_of_both_sides() -> None:
    assert joined_types({"a": pa.int64()}, {"a": pa.float64(), "b": pa.string()}) == {
        "a": pa.float64(),
        "b": pa.string(),
    }


def test_a_range_error_counts_rows_from_the_file_start() -> None:
    error = BlockError.of(BadInputError("ragged row", uri="gs://b/o", location="row 12 (line 13)"))

    assert error.in_file(0) == "gs://b/o row 12 (line 13): ragged row"
    assert error.in_file(1000) == "gs://b/o row 1012: ragged row"
