"""Small data builders shared by the validation tests."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow as pa

from cascade.cli.sample_data import sample_csv
from cascade.core.validation_config import ValidationConfig
from cascade.validation.names import FileFormat
from cascade.validation.source import DataSource
from cascade.validation.statistics import summarize_batches
from cascade.validation.summaries import DatasetSummary


def csv_source(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> DataSource:
    """A DataSource over a local file holding ``text``; the format follows ``name``."""
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    fmt = {
        ".csv": FileFormat.CSV,
        ".gz": FileFormat.CSV_GZIP,
        ".jsonl": FileFormat.NDJSON,
        ".parquet": FileFormat.PARQUET,
    }[path.suffix]
    return DataSource.local_file(str(path), fmt, uri=f"gs://landing/ds/{name}")


def summary_of(
    columns: dict[str, list[object]],
    config: ValidationConfig | None = None,
    batch_rows: int | None = None,
) -> DatasetSummary:
    """The summary of a table given as columns, optionally split into batches."""
    table = pa.table(columns)
    batches = table.to_batches(max_chunksize=batch_rows) if batch_rows else [table]
    return summarize_batches(batches, config or ValidationConfig())


def moved_sample_csv(rows: int, seed: int) -> bytes:
    """The sample's drifted population (older, richer, lower scores, another employment
    mix, more defaults) without its unseen regions: the world moved, nothing is broken
    (value skews only, no schema skew)."""
    table = list(csv.reader(io.StringIO(sample_csv(rows, seed=seed, drift=True).decode())))
    region = table[0].index("region")
    for row in table[1:]:
        if row[region] in ("overseas", "unknown"):
            row[region] = "north"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    return out.getvalue().encode()
