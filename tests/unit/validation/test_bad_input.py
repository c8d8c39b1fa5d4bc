"""Every kind of bad input is a BadInputError naming the file, and the row/column where known."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.names import check_landed_name, file_format_of
from cascade.validation.statistics import compute_statistics
from tests.unit.validation.builders import csv_source

URI = "gs://landing/ds/data.csv"


def _error(
    tmp_path: Path, content: bytes, name: str = "data.csv", config: ValidationConfig | None = None
) -> str:
    source = csv_source(tmp_path, content, name)
    with pytest.raises(BadInputError) as raised:
        compute_statistics(source, config or ValidationConfig())
    return str(raised.value)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, b"")

    assert message.startswith(URI)
    assert "empty" in message


def test_header_only_file_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, b"age,city\n")

    assert "header but no data rows" in message
    assert "line 2" in message


def test_utf8_byte_order_mark_is_refused_at_line_1_column_1(tmp_path: Path) -> None:
    message = _error(tmp_path, b"\xef\xbb\xbfage,city\n1,a\n")

    assert "byte-order mark" in message
    assert "line 1, column #1" in message


def test_utf16_file_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, "age,city\n1,a\n".encode("utf-16"))

    assert "UTF-16" in message


def test_wrong_delimiter_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, b"age;city;score\n1;a;2.0\n")

    assert "wrong delimiter" in message
    assert "';'" in message


def test_non_utf8_bytes_name_row_and_column(tmp_path: Path) -> None:
    message = _error(tmp_path, b"age,city\n1,paris\n2,m\xfcnchen\n")

    assert message.startswith(URI)
    assert "not valid UTF-8" in message
    assert "row 2 (line 3)" in message
    assert "column 'city' (#2)" in message


def test_ragged_row_names_row_and_column(tmp_path: Path) -> None:
    message = _error(tmp_path, b"age,city,score\n1,a,2.0\n2,b\n3,c,1.0\n")

    assert "ragged row" in message
    assert "row 2 (line 3)" in message
    assert "column 'score' (#3)" in message


def test_ragged_row_in_a_later_block_names_the_data_row(tmp_path: Path) -> None:
    rows = "".join(f"{index},x\n" for index in range(5000))
    content = ("id,name\n" + rows + "5000,x,extra\n").encode()
    config = ValidationConfig(read_block_bytes=64 * 1024)

    message = _error(tmp_path, content, config=config)

    assert "row 5001" in message
    assert "extra values" in message


def test_binary_file_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, b"age,city\n1,\x00\x01\x02\n")

    assert "binary file" in message


def test_compressed_data_under_a_csv_name_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, gzip.compress(b"age\n1\n"))

    assert "gzip-compressed" in message


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    config = ValidationConfig(max_file_size_bytes=10)

    message = _error(tmp_path, b"age,city\n1,a\n2,b\n", config=config)

    assert "over the 10-byte limit" in message


def test_gzip_over_the_uncompressed_limit_is_refused(tmp_path: Path) -> None:
    content = gzip.compress(b"age\n" + b"1\n" * 200_000)
    config = ValidationConfig(max_uncompressed_bytes=100_000, read_block_bytes=64 * 1024)

    message = _error(tmp_path, content, name="data.csv.gz", config=config)

    assert "max_uncompressed_bytes" in message


def test_duplicate_and_empty_column_names_are_refused(tmp_path: Path) -> None:
    assert "duplicate column name 'a'" in _error(tmp_path, b"a,b,a\n1,2,3\n")
    assert "empty column name" in _error(tmp_path, b"a,,c\n1,2,3\n")


def test_invalid_json_line_is_located(tmp_path: Path) -> None:
    content = b'{"a": 1}\n{"a": 2}\n{"a": \n'

    message = _error(tmp_path, content, name="data.jsonl")

    assert "line 3" in message
    assert "not valid JSON" in message


def test_invalid_parquet_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, b"this is not parquet at all", name="data.parquet")

    assert "not a valid Parquet file" in message


@pytest.mark.parametrize(
    "name",
    [
        "ds/../etc/passwd.csv",
        "ds/./a.csv",
        "ds//a.csv",
        "ds/a b.csv",
        "ds/a\nb.csv",
        "ds/-rf.csv",
        "ds/caf\u00e9.csv",
        "ds/" + "a" * 1100 + ".csv",
    ],
)
def test_odd_object_names_are_refused(name: str) -> None:
    with pytest.raises(BadInputError) as raised:
        check_landed_name(name, uri=f"gs://landing/{name}")

    assert "object name" in str(raised.value)


def test_plain_names_pass_and_declare_their_format() -> None:
    assert check_landed_name("ds/2026/11/part-0001.csv.gz") == "ds/2026/11/part-0001.csv.gz"
    assert file_format_of("ds/part.CSV.GZ").value == "csv.gz"


def test_unknown_extension_is_refused() -> None:
    with pytest.raises(BadInputError, match="unsupported file extension"):
        file_format_of("ds/report.xlsx", uri="gs://landing/ds/report.xlsx")
