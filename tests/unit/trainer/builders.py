"""Tiny datasets and hand-built transform and job specs for trainer tests."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cascade.cli.sample_data import sample_csv
from cascade.core.job_spec import TrainingJobSpec
from cascade.trainer.storage import TrainerStorage
from cascade.transform.spec import (
    FeatureTransform,
    HashTransform,
    LabelSpec,
    NumericTransform,
    SnapshotFile,
    SplitSpec,
    TransformSpec,
    VocabularyTransform,
)

ProblemType = Literal["binary", "multiclass", "regression"]
BUCKET = "cascade-artifacts"
NEWEST_COLUMN = "__cascade_newest_file"
NEWEST_FILE = SnapshotFile(uri="gs://cascade-landing/credit/day-9.csv", generation=9, rows=1)


def sample_table(rows: int, *, seed: int = 7, drift: bool = False) -> pa.Table:
    """``cascade.cli.sample_data`` rows as an Arrow table (customer_id as the key column)."""
    return pacsv.read_csv(io.BytesIO(sample_csv(rows, seed=seed, drift=drift)))


def numeric(name: str, mean: float, std: float, **extra: object) -> NumericTransform:
    return NumericTransform.model_validate(
        {"name": name, "mean": mean, "std": std, "fill_value": mean, **extra}
    )


def sample_features(exclude: tuple[str, ...] = ()) -> list[FeatureTransform]:
    """A transform of the sample data's features, fitted by hand (roughly its statistics)."""
    features: list[FeatureTransform] = [
        numeric("age", 40.0, 12.0, clip=(18.0, 90.0), bucket_boundaries=[25.0, 35.0, 50.0, 65.0]),
        numeric("income", 52000.0, 30000.0, clip=(0.0, 1_000_000.0)),
        numeric("loan_amount", 30500.0, 17000.0),
        numeric("credit_score", 660.0, 70.0, clip=(300.0, 850.0)),
        numeric("num_late_payments", 0.8, 1.0),
        VocabularyTransform(
            name="employment",
            vocabulary=["salaried", "self_employed", "unemployed", "retired"],
            num_oov_buckets=2,
            fill_value="__missing__",
        ),
        VocabularyTransform(name="home_ownership", vocabulary=["rent", "mortgage", "own"]),
        VocabularyTransform(name="purpose", vocabulary=["car", "education", "other"]),
        VocabularyTransform(name="term_months", vocabulary=["12", "24", "36", "60"]),
        HashTransform(name="region", hash_buckets=8),
    ]
    return [feature for feature in features if feature.name not in exclude]


def label_for(problem_type: ProblemType) -> LabelSpec:
    if problem_type == "binary":
        return LabelSpec(name="defaulted", problem_type="binary", classes=["0", "1"])
    if problem_type == "multiclass":
        return LabelSpec(
            name="home_ownership", problem_type="multiclass", classes=["rent", "mortgage", "own"]
        )
    return LabelSpec(name="credit_score", problem_type="regression")


def make_spec(
    problem_type: ProblemType = "binary",
    *,
    run_id: str = "run-1",
    train_files: list[str] | None = None,
    eval_files: list[str] | None = None,
    rows: tuple[int, int] = (0, 0),
    **extra: object,
) -> TransformSpec:
    label = label_for(problem_type)
    return TransformSpec(
        dataset="credit",
        run_id=run_id,
        label=label,
        features=sample_features(exclude=(label.name,)),
        passthrough_key="customer_id",
        split=SplitSpec(method="key", key_column="customer_id"),
        snapshot=[],
        train_files=train_files or [],
        eval_files=eval_files or [],
        train_rows=rows[0],
        eval_rows=rows[1],
        created_at=datetime(2026, 11, 27, tzinfo=UTC),
        **extra,  # type: ignore[arg-type]
    )


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def write_run(
    storage: TrainerStorage,
    *,
    problem_type: ProblemType = "binary",
    rows: int = 1200,
    shards: int = 2,
    run_id: str = "run-1",
    base: str = f"gs://{BUCKET}",
    seed: int = 7,
    newest_rows: int = 0,
    **job_fields: object,
) -> tuple[str, TransformSpec, TrainingJobSpec]:
    """Shards, transform spec and job spec of one run in ``storage``; the job spec URI.

    ``newest_rows``: the last rows (all in eval when fewer than a quarter) come from a
    newest file, marked as the transform marks them."""
    table = sample_table(rows, seed=seed)
    newest: dict[str, object] = {}
    if newest_rows:
        marks = [index >= rows - newest_rows for index in range(rows)]
        table = table.append_column(NEWEST_COLUMN, pa.array(marks, pa.bool_()))
        newest = {"newest_files": [NEWEST_FILE], "newest_column": NEWEST_COLUMN}
    eval_rows = rows // 4
    train, evaluation = table.slice(0, rows - eval_rows), table.slice(rows - eval_rows)
    transform = f"{base}/runs/{run_id}/transform"
    train_files = _write_shards(storage, train, f"{transform}/train", shards)
    eval_files = _write_shards(storage, evaluation, f"{transform}/eval", 1)
    spec = make_spec(
        problem_type,
        run_id=run_id,
        train_files=train_files,
        eval_files=eval_files,
        rows=(train.num_rows, evaluation.num_rows),
        **newest,
    )
    storage.write_bytes(f"{transform}/transform.json", spec.model_dump_json().encode())
    job_spec = TrainingJobSpec.model_validate(
        {
            "run_id": run_id,
            "dataset": "credit",
            "display_name": f"train-{run_id}",
            "transform_spec_uri": f"{transform}/transform.json",
            "output_dir": f"{base}/runs/{run_id}/training",
            "epochs": 3,
            "batch_size": 64,
            "hyperparameters": {"hidden_units": 16, "learning_rate": 0.01},
            **job_fields,
        }
    )
    job_spec_uri = f"{job_spec.output_dir}/job_spec.json"
    storage.write_bytes(job_spec_uri, job_spec.model_dump_json().encode())
    return job_spec_uri, spec, job_spec


def _write_shards(storage: TrainerStorage, table: pa.Table, prefix: str, count: int) -> list[str]:
    per_shard = -(-table.num_rows // count)
    uris = []
    for index in range(count):
        uri = f"{prefix}/part-{index:05d}.parquet"
        storage.write_bytes(uri, _parquet_bytes(table.slice(index * per_shard, per_shard)))
        uris.append(uri)
    return uris
