"""A row longer than the reader's block names the row and the setting to raise (issue 13.8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.statistics import compute_statistics
from tests.unit.validation.builders import csv_source

MIB = 1024 * 1024


def _error(tmp_path: Path, content: bytes, name: str, config: ValidationConfig) -> str:
    source = csv_source(tmp_path, content, name)
    with pytest.raises(BadInputError) as raised:
        compute_statistics(source, config)
    return str(raised.value)


def _csv_with_long_row(long_row: int, length: int, rows: int = 6) -> bytes:
    lines = [b"id,text"]
    for row in range(1, rows + 1):
        text = b"x" * length if row == long_row else b"short"
        lines.append(b"%d,%s" % (row, text))
    return b"\n".join(lines) + b"\n"


def test_a_50_mb_csv_row_names_the_row_and_read_block_bytes(tmp_path: Path) -> None:
    content = _csv_with_long_row(3, 50 * MIB)

    message = _error(tmp_path, content, "data.csv", ValidationConfig())

    assert "straddl" not in message
    assert "validation.read_block_bytes" in message
    assert "row 3" in message
    assert message.startswith("gs://landing/ds/data.csv")


def test_raising_read_block_bytes_reads_the_long_csv_row(tmp_path: Path) -> None:
    content = _csv_with_long_row(2, 3 * MIB)
    source = csv_source(tmp_path, content, "data.csv")

    summary = compute_statistics(source, ValidationConfig(read_block_bytes=4 * MIB))

    assert summary.num_examples == 6


def test_a_csv_row_beyond_the_line_limit_names_the_row_and_setting(tmp_path: Path) -> None:
    # 16 blocks of 64 KiB: line_blocks gives up on the line before Arrow sees it
    content = _csv_with_long_row(4, 2 * MIB)

    message = _error(tmp_path, content, "data.csv", ValidationConfig(read_block_bytes=64 * 1024))

    assert "validation.read_block_bytes" in message
    assert "row 4" in message


def test_a_long_json_line_names_the_line_and_read_block_bytes(tmp_path: Path) -> None:
    lines = [b'{"id": %d, "text": "short"}' % row for row in range(1, 6)]
    lines[1] = b'{"id": 2, "text": "' + b"x" * (300 * 1024) + b'"}'
    content = b"\n".join(lines) + b"\n"

    message = _error(tmp_path, content, "data.jsonl", ValidationConfig(read_block_bytes=64 * 1024))

    assert "straddl" not in message
    assert "validation.read_block_bytes" in message
    assert "line 2" in message


def test_a_long_row_with_newlines_in_values_names_the_setting(tmp_path: Path) -> None:
    content = _csv_with_long_row(2, 400 * 1024)
    config = ValidationConfig(read_block_bytes=64 * 1024, csv_newlines_in_values=True)

    message = _error(tmp_path, content, "data.csv", config)

    assert "straddl" not in message
    assert "validation.read_block_bytes" in message
