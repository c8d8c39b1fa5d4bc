"""Benchmark: validation of a 1,000,000-row CSV against plain ``pyarrow.csv.read_csv``.

    .venv/bin/python bench/validation.py [--rows 1000000] [--repeats 3]

Generates a CSV with 12 mixed columns (ints, floats, low- and high-cardinality strings,
booleans, missing values) in a temporary folder, plus a baseline (statistics and
schema of a 200,000-row file from the same distribution) stored the way the step
stores them. Each measurement runs in a fresh subprocess so that its peak resident
memory (``ru_maxrss``) and Arrow's memory-pool peak are its own; the two modes
alternate so that machine noise hits both alike.

- ``bare``: ``pyarrow.csv.read_csv(path)`` (multi-threaded, whole file in memory).
- ``validate``: what the step does to a file: stream it in bounded blocks, compute
  statistics, load the stored baseline and schema, find anomalies and drift, render
  the HTML report, serialise statistics and anomalies.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from google.protobuf import text_format

from cascade.core.validation_config import ValidationConfig
from cascade.validation.anomalies import Baseline
from cascade.validation.names import FileFormat
from cascade.validation.schema import infer_schema, parse_schema_text, schema_to_text
from cascade.validation.source import DataSource
from cascade.validation.statistics import (
    compute_statistics,
    statistics_proto,
    summary_of_statistics,
)
from cascade.validation.tfmd import statistics_pb2
from cascade.validation.validator import validate_file

CITIES = ["london", "paris", "berlin", "madrid", "rome", "oslo", "vienna", "prague"]
DEVICES = ["ios", "android", "web", "other"]


def _normal(rows: int, mean: float, std: float, seed: int) -> pa.Array:
    """Box-Muller on Arrow's uniform generator: no per-row Python."""
    first = pc.random(rows, initializer=seed)
    second = pc.random(rows, initializer=seed + 1)
    radius = pc.sqrt(pc.multiply(pc.ln(pc.subtract(1.0, first)), -2.0))
    angle = pc.multiply(second, 2 * math.pi)
    return pc.add(pc.multiply(pc.multiply(radius, pc.cos(angle)), std), mean)


def _integers(rows: int, low: int, high: int, seed: int) -> pa.Array:
    scaled = pc.floor(pc.multiply(pc.random(rows, initializer=seed), high - low + 1))
    return pc.add(pc.cast(scaled, pa.int64()), low)


def _choice(rows: int, values: list[str], seed: int, missing: float = 0.0) -> pa.Array:
    indices = _integers(rows, 0, len(values) - 1, seed)
    chosen = pc.take(pa.array(values), indices)
    if not missing:
        return chosen
    keep = pc.greater_equal(pc.random(rows, initializer=seed + 7), missing)
    return pc.if_else(keep, chosen, pa.scalar(None, pa.string()))


def generate_table(rows: int, seed: int) -> pa.Table:
    """12 columns: 4 int, 4 float (rounded as exported data is), 3 string, 1 boolean."""
    return pa.table(
        {
            "customer_id": pc.add(pa.array(range(rows), pa.int64()), seed * 10_000_000),
            "age": _integers(rows, 18, 90, seed + 1),
            "income": pc.round(pc.exp(_normal(rows, 10.8, 0.5, seed + 2)), 2),
            "score": pc.round(_normal(rows, 0.0, 1.0, seed + 4), 4),
            "balance": pc.round(_normal(rows, 50.0, 1000.0, seed + 6), 2),
            "rate": pc.round(pc.random(rows, initializer=seed + 8), 4),
            "late_payments": _integers(rows, 0, 12, seed + 9),
            "city": _choice(rows, CITIES, seed + 10),
            "segment": _choice(rows, ["a", "b", "c"], seed + 11),
            "device": _choice(rows, DEVICES, seed + 12, missing=0.05),
            "is_member": pc.less(pc.random(rows, initializer=seed + 13), 0.3),
            "defaulted": _integers(rows, 0, 1, seed + 14),
        }
    )


def prepare(workdir: Path, rows: int) -> Path:
    """The CSV to measure, and the stored baseline and schema it is judged against."""
    options = pacsv.WriteOptions(quoting_style="needed")
    data = workdir / "data.csv"
    pacsv.write_csv(generate_table(rows, seed=1), data, write_options=options)
    reference = workdir / "reference.csv"
    pacsv.write_csv(
        generate_table(max(rows // 5, 1000), seed=101), reference, write_options=options
    )
    config = ValidationConfig()
    summary = compute_statistics(DataSource.local_file(str(reference), FileFormat.CSV), config)
    (workdir / "baseline_stats.pb").write_bytes(
        statistics_proto(summary, config, name="baseline").SerializeToString()
    )
    (workdir / "schema.pbtxt").write_text(schema_to_text(infer_schema(summary, config)))
    return data


def _measure_bare(data: Path) -> int:
    return int(pacsv.read_csv(data).num_rows)


def _measure_validate(data: Path) -> int:
    workdir = data.parent
    stored = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        (workdir / "baseline_stats.pb").read_bytes()
    )
    schema = parse_schema_text((workdir / "schema.pbtxt").read_text(), where="schema.pbtxt")
    validation = validate_file(
        DataSource.local_file(str(data), FileFormat.CSV),
        schema=schema,
        baseline=Baseline(summary_of_statistics(stored), files=1),
        config=ValidationConfig(),
    )
    validation.statistics.SerializeToString()
    text_format.MessageToString(validation.result.anomalies)
    if validation.result.drift == []:
        raise RuntimeError("drift was not measured: the benchmark would not be end to end")
    return validation.summary.num_examples


def child(mode: str, data: Path) -> None:
    """One measurement in this (fresh) process; prints a JSON line.

    Modules are imported before the clock starts in both modes (a function instance
    imports them once, at cold start); the per-file work is what is timed.
    """
    started = time.perf_counter()
    rows = _measure_bare(data) if mode == "bare" else _measure_validate(data)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "mode": mode,
                "rows": rows,
                "seconds": seconds,
                "peak_rss_mib": peak_kib / 1024,
                "arrow_pool_peak_mib": pa.default_memory_pool().max_memory() / 2**20,
            }
        )
    )


def _run_child(mode: str, data: Path) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--data", str(data)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["bare", "validate"])
    parser.add_argument("--data", type=Path)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child, arguments.data)
        return
    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as folder:
        data = prepare(Path(folder), arguments.rows)
        print(f"file: {arguments.rows} rows x 12 columns, {data.stat().st_size / 2**20:.1f} MiB")
        results: dict[str, list[dict[str, float]]] = {"bare": [], "validate": []}
        for _ in range(arguments.repeats):
            for mode in results:
                results[mode].append(_run_child(mode, data))
    _print_summary(results)


def _print_summary(results: dict[str, list[dict[str, float]]]) -> None:
    medians = {
        mode: statistics.median(run["seconds"] for run in runs) for mode, runs in results.items()
    }
    for mode, runs in results.items():
        rows = runs[0]["rows"]
        times = ", ".join(f"{r['seconds']:.3f}" for r in runs)
        print(
            f"{mode:>9}: median {medians[mode]:.3f} s ({rows / medians[mode]:,.0f} rows/s) "
            f"[{times}]; peak RSS {max(r['peak_rss_mib'] for r in runs):.0f} MiB, "
            f"Arrow pool peak {max(r['arrow_pool_peak_mib'] for r in runs):.0f} MiB"
        )
    print(f"validate / bare time: {medians['validate'] / medians['bare']:.2f}x")


if __name__ == "__main__":
    main()
