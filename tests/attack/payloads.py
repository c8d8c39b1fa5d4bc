"""Hostile file contents for the attack suite, built from the sample credit rows.

Each builder returns the bytes of one upload. A file that reads cleanly breaks exactly
one rule of the dataset's schema (inferred from the seed file), so the run is rejected
and names the column; the others cannot be read at all and the run fails naming the
row or line.
"""

from __future__ import annotations

import csv
import gzip
import io

from cascade.cli.sample_data import COLUMNS, sample_csv

__all__ = [
    "INJECTION",
    "SCRIPT",
    "csv_bytes",
    "gzip_bomb",
    "long_single_line",
    "sample_rows",
    "with_cell",
]

INJECTION = "=cmd|' /C calc'!A0"
"""A spreadsheet formula (CSV injection): data here, never evaluated."""
SCRIPT = "<script>alert(1)</script>"
"""Markup in a value: the validation page must show it escaped."""
MIB = 1024 * 1024


def sample_rows(rows: int = 20, seed: int = 11) -> list[list[str]]:
    """Sample rows (header excluded) as strings."""
    reader = csv.reader(io.StringIO(sample_csv(rows, seed=seed).decode()))
    return list(reader)[1:]


def csv_bytes(rows: list[list[str]], header: list[str] | None = None) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(COLUMNS) if header is None else header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def with_cell(row: int, cells: dict[str, str], rows: int = 20) -> bytes:
    """Sample rows with the cells of data row ``row`` (1-based) replaced."""
    table = sample_rows(rows)
    for column, value in cells.items():
        table[row - 1][COLUMNS.index(column)] = value
    return csv_bytes(table)


def gzip_bomb(uncompressed: int = 32 * MIB) -> bytes:
    """A small .csv.gz that inflates to ``uncompressed`` bytes of valid-looking rows."""
    header = (",".join(COLUMNS) + "\n").encode()
    row = b"c00000000,40,50000.0,10000.0,36,650,salaried,rent,car,north,0,0\n"
    return gzip.compress(header + row * (uncompressed // len(row)), compresslevel=9)


def long_single_line(length: int = 50 * MIB) -> bytes:
    """A CSV whose third data row is one value of ``length`` bytes: no newline in it."""
    table = sample_rows(5)
    table[2][COLUMNS.index("purpose")] = "x" * length
    return csv_bytes(table)
