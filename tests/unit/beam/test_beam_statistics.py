"""The Beam path's statistics equal the in-function path's on the same file.

The pipeline runs as a process of .venv-beam (Beam's FnApiRunner, as the local job
service runs it) over files cut into many ranges; the function path is
``compute_statistics`` in this venv. Equal means the same proto, floats to 12
significant digits (means and variances merge to rounding in any order).
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.localcloud.gcs_subscriber import Message, avro_file_bytes
from cascade.validation.names import FileFormat
from cascade.validation.source import DataSource
from cascade.validation.statistics import compute_statistics, statistics_proto
from tests.unit.beam.beam_venv import (
    beam_python,
    read_statistics,
    rounded,
    run_statistics_pipeline,
)

URI = "gs://landing/shop/orders.csv#7"
CONFIG = {"read_block_bytes": 64 * 1024}


def _write_mixed_csv(path: Path, rows: int = 30_000) -> None:
    """Numeric, categorical and boolean columns, missing values, a column that is empty
    until late, and two that widen late in the file (int → float, int → string)."""
    generator = random.Random(17)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "income", "city", "flag", "rate", "code", "late", "note"])
        for row in range(rows):
            writer.writerow(
                [
                    generator.randint(18, 90),
                    "" if row % 17 == 0 else round(generator.gauss(5e4, 1e4), 2),
                    generator.choice(["paris", "oslo", "rome", "", "NA", "köln"]),
                    generator.choice(["true", "false"]),
                    (1.5 if row > rows * 5 // 6 else 3) if row % 5 else "",
                    f"x{row % 7}" if row > rows * 2 // 3 else row % 9,
                    "" if row < rows * 9 // 10 else row % 3,
                    '"quoted, with comma"' if row % 11 == 0 else "plain",
                ]
            )


def _function_statistics(path: Path, file_format: FileFormat, config: dict[str, Any]) -> Any:
    validation = ValidationConfig.model_validate(config)
    source = DataSource.local_file(str(path), file_format, uri=URI)
    summary = compute_statistics(source, validation)
    return statistics_proto(summary, validation, name=URI)


def test_csv_statistics_equal_the_function_path_across_ranges_and_widening(
    tmp_path: Path,
) -> None:
    data = tmp_path / "orders.csv"
    _write_mixed_csv(data)
    output = tmp_path / "beam"

    result = run_statistics_pipeline(data, output, uri=URI, file_format="csv", config=CONFIG)

    assert result == {"status": "ok", "num_examples": 30_000, "blocks": result["blocks"]}
    assert result["blocks"] > 10
    beam = read_statistics(output / "statistics.pb")
    expected = _function_statistics(data, FileFormat.CSV, CONFIG)
    assert rounded(beam) == rounded(expected)
    kinds = {feature.path.step[0]: feature.type for feature in beam.datasets[0].features}
    assert kinds["rate"] == expected.datasets[0].features[4].type  # widened to FLOAT


def test_one_range_per_line_still_equals_the_function_path(tmp_path: Path) -> None:
    data = tmp_path / "orders.csv"
    _write_mixed_csv(data, rows=400)
    output = tmp_path / "beam"

    result = run_statistics_pipeline(
        data, output, uri=URI, file_format="csv", config=CONFIG, block_bytes=7
    )

    assert result["status"] == "ok"
    assert result["num_examples"] == 400
    expected = _function_statistics(data, FileFormat.CSV, CONFIG)
    assert rounded(read_statistics(output / "statistics.pb")) == rounded(expected)


def test_gzip_csv_is_one_range_and_equal(tmp_path: Path) -> None:
    plain = tmp_path / "orders.csv"
    _write_mixed_csv(plain, rows=5_000)
    data = tmp_path / "orders.csv.gz"
    data.write_bytes(gzip.compress(plain.read_bytes()))
    output = tmp_path / "beam"

    result = run_statistics_pipeline(data, output, uri=URI, file_format="csv.gz", config=CONFIG)

    assert result == {"status": "ok", "num_examples": 5_000, "blocks": 1}
    expected = _function_statistics(data, FileFormat.CSV_GZIP, CONFIG)
    assert rounded(read_statistics(output / "statistics.pb")) == rounded(expected)


def test_ndjson_is_cut_into_ranges_and_equal(tmp_path: Path) -> None:
    data = tmp_path / "orders.ndjson"
    lines = [
        f'{{"id": {row}, "score": {row / 7:.3f}, "tag": "{"ab"[row % 2]}"}}' for row in range(6000)
    ]
    data.write_text("\n".join(lines) + "\n")
    output = tmp_path / "beam"

    result = run_statistics_pipeline(data, output, uri=URI, file_format="ndjson", config=CONFIG)

    assert result["status"] == "ok"
    assert result["blocks"] > 1
    expected = _function_statistics(data, FileFormat.NDJSON, CONFIG)
    assert rounded(read_statistics(output / "statistics.pb")) == rounded(expected)


@pytest.mark.parametrize(
    ("content", "expected_message"),
    [
        (b"a,b\n", "the file has a header but no data rows"),
        (b"\xef\xbb\xbfa,b\n1,2\n", "byte-order mark"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "binary file"),
    ],
)
def test_hostile_files_are_refused_by_name_not_crashed(
    tmp_path: Path, content: bytes, expected_message: str
) -> None:
    data = tmp_path / "bad.csv"
    data.write_bytes(content)
    output = tmp_path / "beam"

    result = run_statistics_pipeline(data, output, uri=URI, file_format="csv", config=CONFIG)

    assert result["status"] == "bad_input"
    assert expected_message in result["message"]
    assert result["message"].startswith(URI)
    assert not (output / "statistics.pb").exists()


@pytest.mark.parametrize(
    ("bad_row", "bad_line"),
    [(15_000, b"1,2"), (3, b"1,2,3,4"), (19_999, b"7,\xff\xfe,x")],
    ids=["too few fields", "too many fields", "not UTF-8"],
)
def test_a_bad_row_is_named_as_the_function_path_names_it(
    tmp_path: Path, bad_row: int, bad_line: bytes
) -> None:
    data = tmp_path / "orders.csv"
    rows = [b"a,b,c"] + [f"{i},{i * 2},x{i}".encode() for i in range(20_000)]
    rows[bad_row] = bad_line
    data.write_bytes(b"\n".join(rows) + b"\n")
    output = tmp_path / "beam"
    validation = ValidationConfig.model_validate(CONFIG)
    with pytest.raises(BadInputError) as in_function:
        compute_statistics(DataSource.local_file(str(data), FileFormat.CSV, uri=URI), validation)

    result = run_statistics_pipeline(data, output, uri=URI, file_format="csv", config=CONFIG)

    assert result == {"status": "bad_input", "message": str(in_function.value)}
    assert f"row {bad_row}" in result["message"]


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    data = tmp_path / "orders.csv"
    _write_mixed_csv(data, rows=2_000)
    output = tmp_path / "beam"

    result = run_statistics_pipeline(
        data,
        output,
        uri=URI,
        file_format="csv",
        config={**CONFIG, "max_file_size_bytes": 1000},
    )

    assert result["status"] == "bad_input"
    assert result["message"].startswith(f"{URI}: the file is ")
    assert "validation.max_file_size_bytes" in result["message"]


def test_parquet_is_cut_between_row_groups_and_equal(tmp_path: Path) -> None:
    csv_file = tmp_path / "orders.csv"
    _write_mixed_csv(csv_file, rows=20_000)
    data = tmp_path / "orders.parquet"
    pq.write_table(pacsv.read_csv(csv_file), data, row_group_size=1_500)
    output = tmp_path / "beam"

    result = run_statistics_pipeline(
        data, output, uri=URI, file_format="parquet", config=CONFIG, block_bytes=20_000
    )

    assert result["status"] == "ok"
    assert result["num_examples"] == 20_000
    assert result["blocks"] > 5
    expected = _function_statistics(data, FileFormat.PARQUET, CONFIG)
    assert rounded(read_statistics(output / "statistics.pb")) == rounded(expected)


@pytest.mark.parametrize(
    ("content", "expected_message"),
    [(b"PAR1 not really parquet PAR1", "not a valid Parquet file"), (None, "has no rows")],
)
def test_bad_parquet_is_refused_by_name(
    tmp_path: Path, content: bytes | None, expected_message: str
) -> None:
    data = tmp_path / "orders.parquet"
    if content is None:
        pq.write_table(pa.table({"a": pa.array([], pa.int64())}), data)
    else:
        data.write_bytes(content)
    output = tmp_path / "beam"

    result = run_statistics_pipeline(data, output, uri=URI, file_format="parquet", config=CONFIG)

    assert result["status"] == "bad_input"
    assert result["message"].startswith(f"{URI}: ")
    assert expected_message in result["message"]


def test_on_dataflow_the_workers_run_the_image_that_launched_them(tmp_path: Path) -> None:
    """``CASCADE_BEAM_SDK_IMAGE`` (set in the Flex Template image) becomes the workers'
    ``--sdk_container_image``, unless the launch chose one."""
    check = (
        "from cascade.beam.pipeline import with_sdk_image\n"
        "image = 'europe-docker.pkg.dev/p/cascade-images/beam@sha256:00'\n"
        "assert with_sdk_image(['--runner=DataflowRunner'], image) == "
        "['--runner=DataflowRunner', f'--sdk_container_image={image}']\n"
        "assert with_sdk_image(['--sdk_container_image=x'], image) == "
        "['--sdk_container_image=x']\n"
        "assert with_sdk_image([], None) == []\n"
    )
    completed = subprocess.run(
        [str(beam_python()), "-c", check],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )

    assert completed.returncode == 0, completed.stderr


def test_a_stream_file_leaves_out_the_records_its_schema_does_not_allow(tmp_path: Path) -> None:
    """``--record_fields``: the job splits out the records validate does (a field the
    stream's schema does not name), so its statistics equal the function path's."""
    records = [json.dumps({"amount": i * 0.5, "city": f"c{i % 5}"}).encode() for i in range(400)]
    for position in (3, 150, 151):
        records[position] = json.dumps({"amount": 9e9, "city": "x", "channel": "web"}).encode()
    when = datetime(2026, 12, 1, tzinfo=UTC)
    data = tmp_path / "batch.avro"
    data.write_bytes(
        avro_file_bytes(
            "projects/p/subscriptions/s",
            [Message(f"m{i}", when, {}, body) for i, body in enumerate(records)],
        )
    )
    output = tmp_path / "beam"
    fields = ["amount", "city"]

    result = run_statistics_pipeline(
        data,
        output,
        uri=URI,
        file_format="avro",
        config=CONFIG,
        extra=[f"--record_fields={json.dumps(fields)}"],
    )

    assert result["status"] == "ok"
    assert result["num_examples"] == 397
    validation = ValidationConfig.model_validate(CONFIG)
    source = DataSource.local_file(str(data), FileFormat.AVRO, uri=URI)
    expected = statistics_proto(
        compute_statistics(replace(source, record_fields=frozenset(fields)), validation),
        validation,
        name=URI,
    )
    assert rounded(read_statistics(output / "statistics.pb")) == rounded(expected)
