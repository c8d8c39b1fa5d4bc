"""Benchmark: one training epoch of the trainer against the fastest plain Keras baseline.

    .venv/bin/python bench/training.py [--rows 1000000] [--batch-size 256] [--rounds 2]

Generates ``--rows`` rows with ``cascade.cli.sample_data`` (12 columns), writes them as 8
Parquet shards, and fits a transform spec to them (z-score, clip and buckets for numeric
columns, vocabularies with OOV buckets, a hashed id). Both modes then train the very same
model (``cascade.trainer.model.build_model``: preprocessing layers inside, MLP 2x64,
binary head) for one epoch at the same batch size, in the same process, alternating:

- ``baseline``: raw feature columns already in memory as NumPy arrays, fed through
  ``tf.data.Dataset.from_tensor_slices(...).batch(n).prefetch(AUTOTUNE)``;
- ``trainer``: the trainer's own path, ``cascade.trainer.fit.fit_model`` — Parquet shards
  read by the input pipeline (shuffled), its callbacks (early stopping, TensorBoard
  scalars, epoch logs), the default distribution strategy, and the end-of-epoch
  evaluation that early stopping needs (on an eval shard of 1% of the rows).

Reading the shards into memory for the baseline is not timed; the trainer's reading is.
Writes ``bench/results/training.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import tensorflow as tf

from cascade.cli.sample_data import sample_csv
from cascade.core.hyperparameters import Hyperparameters
from cascade.core.observability import run_logger
from cascade.trainer.data import ShardReader
from cascade.trainer.fit import FitPlan, fit_model
from cascade.trainer.model import build_model
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.strategy import choose_strategy
from cascade.transform.spec import (
    FeatureTransform,
    HashTransform,
    LabelSpec,
    NumericTransform,
    SplitSpec,
    TransformSpec,
    VocabularyTransform,
)

NUMERIC = ("age", "income", "loan_amount", "credit_score", "num_late_payments")
CATEGORICAL = ("employment", "home_ownership", "purpose", "region", "term_months")
SHARDS = 8


def _fitted_spec(table: pa.Table) -> TransformSpec:
    features: list[FeatureTransform] = []
    for name in NUMERIC:
        values = table.column(name).to_numpy().astype(np.float64)
        features.append(
            NumericTransform(
                name=name,
                mean=float(values.mean()),
                std=float(values.std()),
                fill_value=float(np.median(values)),
                clip=(float(values.min()), float(values.max())),
                bucket_boundaries=[float(q) for q in np.quantile(values, [0.25, 0.5, 0.75])]
                if name == "age"
                else [],
            )
        )
    for name in CATEGORICAL:
        vocabulary = sorted({str(value) for value in table.column(name).to_pylist()})
        features.append(VocabularyTransform(name=name, vocabulary=vocabulary, num_oov_buckets=2))
    features.append(HashTransform(name="customer_id", hash_buckets=64))
    return TransformSpec(
        dataset="bench",
        run_id="bench",
        label=LabelSpec(name="defaulted", problem_type="binary"),
        features=features,
        split=SplitSpec(),
        snapshot=[],
        train_files=[],
        eval_files=[],
        train_rows=table.num_rows,
        eval_rows=0,
        created_at=datetime.now(UTC),
    )


def _write_shards(table: pa.Table, directory: Path) -> list[Path]:
    per_shard = -(-table.num_rows // SHARDS)
    paths = []
    for index in range(SHARDS):
        path = directory / f"train-{index:05d}.parquet"
        pq.write_table(table.slice(index * per_shard, per_shard), path)
        paths.append(path)
    return paths


def _baseline_epoch(spec: TransformSpec, hparams: Hyperparameters, files: list[Path]) -> float:
    examples = ShardReader(spec).read_all(files)
    model = build_model(spec, hparams).model
    dataset = tf.data.Dataset.from_tensor_slices((examples.features, examples.targets))
    dataset = dataset.batch(hparams.batch_size).prefetch(tf.data.AUTOTUNE)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - started


def _trainer_epoch(
    spec: TransformSpec, hparams: Hyperparameters, files: list[Path], eval_file: Path, scratch: Path
) -> float:
    model = build_model(spec, hparams).model
    plan = FitPlan(
        train_files=files,
        eval_files=[eval_file],
        tensorboard_local_dir=scratch / "tb",
        tensorboard_uri=None,
        checkpoint_dir=None,
    )
    log = run_logger("cascade.bench")
    storage = TrainerStorage(lambda bucket: (_ for _ in ()).throw(RuntimeError(bucket)))
    started = time.perf_counter()
    fit_model(
        model,
        plan,
        spec,
        hparams,
        choose_strategy(None),
        storage=storage,
        log=log,
        is_chief=True,
        gcs_reachable_by_tensorflow=False,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    logging.getLogger("cascade").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cascade-bench-training-") as scratch:
        root = Path(scratch)
        table = pacsv.read_csv(io.BytesIO(sample_csv(options.rows, seed=5)))
        files = _write_shards(table, root)
        eval_file = root / "eval-00000.parquet"
        pq.write_table(table.slice(0, max(1, options.rows // 100)), eval_file)
        spec = _fitted_spec(table)
        hparams = Hyperparameters(batch_size=options.batch_size, epochs=1, dropout=0.1)
        timings: dict[str, list[float]] = {"baseline": [], "trainer": []}
        for _ in range(options.rounds):
            timings["baseline"].append(_baseline_epoch(spec, hparams, files))
            timings["trainer"].append(_trainer_epoch(spec, hparams, files, eval_file, root))
            print({mode: [round(s, 2) for s in runs] for mode, runs in timings.items()}, flush=True)
    # The trainer's fit also evaluates (early stopping needs val_loss): a 1% eval shard.
    best = {mode: min(runs) for mode, runs in timings.items()}
    result = {
        "rows": options.rows,
        "batch_size": options.batch_size,
        "columns": len(table.column_names),
        "seconds": timings,
        "examples_per_second": {mode: options.rows / s for mode, s in best.items()},
        "trainer_over_baseline": best["baseline"] / best["trainer"],
        "median_trainer_over_baseline": statistics.median(timings["baseline"])
        / statistics.median(timings["trainer"]),
        "load_average_after": os.getloadavg()[0],
        "machine": f"{platform.processor() or platform.machine()}, tensorflow {tf.__version__}",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = Path(__file__).parent / "results" / "training.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
