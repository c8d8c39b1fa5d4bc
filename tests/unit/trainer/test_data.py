"""The Parquet input pipeline: columns, labels, batching, shuffling and worker sharding."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cascade.core.errors import BadInputError
from cascade.trainer.data import (
    LabelEncoder,
    ShardReader,
    WorkerShard,
    count_rows,
    download_shards,
    make_dataset,
)
from cascade.trainer.storage import TrainerStorage
from cascade.transform.spec import LabelSpec
from tests.unit.trainer.builders import make_spec, sample_table, write_run


def _shards(tmp_path: Path, rows: int, count: int) -> list[Path]:
    table = sample_table(rows)
    per_shard = -(-rows // count)
    paths = []
    for index in range(count):
        path = tmp_path / f"s{index}.parquet"
        pq.write_table(table.slice(index * per_shard, per_shard), path)
        paths.append(path)
    return paths


def _ids(dataset: object) -> list[float]:
    return [float(v) for _, targets in dataset for v in np.asarray(targets)]  # type: ignore[attr-defined]


def test_shards_are_downloaded_under_names_chosen_locally(
    storage: TrainerStorage, tmp_path: Path
) -> None:
    _, spec, _ = write_run(storage, rows=400, shards=3)

    files = download_shards(storage, spec.train_files, tmp_path / "data", "train")

    assert [path.name for path in files] == [
        "train-00000.parquet",
        "train-00001.parquet",
        "train-00002.parquet",
    ]
    assert count_rows(files) == spec.train_rows


def test_reader_converts_nulls_and_types(tmp_path: Path) -> None:
    table = sample_table(5)
    age = pa.array([None, 30, 40, 50, 60], pa.int64())
    employment = pa.array([None, "retired", "x", "salaried", "unemployed"])
    table = table.set_column(table.schema.get_field_index("age"), "age", age)
    table = table.set_column(table.schema.get_field_index("employment"), "employment", employment)
    pq.write_table(table, tmp_path / "s.parquet")

    examples = ShardReader(make_spec("binary")).read(tmp_path / "s.parquet")

    assert examples.features["age"].dtype == np.float32
    assert np.isnan(examples.features["age"][0])
    assert examples.features["employment"].tolist()[:2] == ["", "retired"]
    assert examples.features["term_months"].tolist()[0] in {"12", "24", "36", "60"}
    assert examples.targets.dtype == np.float32


def test_rows_without_label_are_dropped_and_unknown_labels_rejected(tmp_path: Path) -> None:
    table = sample_table(4)
    labels = pa.array(["rent", None, "own", "castle"])
    table = table.set_column(
        table.schema.get_field_index("home_ownership"), "home_ownership", labels
    )
    pq.write_table(table.slice(0, 3), tmp_path / "ok.parquet")
    pq.write_table(table, tmp_path / "bad.parquet")
    reader = ShardReader(make_spec("multiclass"))

    assert reader.read(tmp_path / "ok.parquet").targets.tolist() == [0, 2]
    with pytest.raises(BadInputError, match="castle"):
        reader.read(tmp_path / "bad.parquet")


def test_numeric_labels_of_a_class_label_match_class_names() -> None:
    encoder = LabelEncoder(LabelSpec(name="y", problem_type="binary", classes=["0", "1"]))

    assert encoder.encode(pa.chunked_array([pa.array([1.0, 0.0, 1.0])])).tolist() == [1, 0, 1]


def test_missing_feature_column_names_the_shard(tmp_path: Path) -> None:
    pq.write_table(sample_table(3).drop_columns(["region"]), tmp_path / "s.parquet")

    with pytest.raises(BadInputError, match=r"s\.parquet.*region"):
        ShardReader(make_spec("binary")).read(tmp_path / "s.parquet")


def test_dataset_batches_every_row_once_per_pass_and_shuffles(tmp_path: Path) -> None:
    files = _shards(tmp_path, 1000, 3)
    spec = make_spec("regression")  # the target is credit_score: nearly unique per row
    expected = Counter(ShardReader(spec).read_all(files).targets.tolist())

    ordered = make_dataset(files, spec, batch_size=64, rows=count_rows(files))
    shuffled = make_dataset(files, spec, batch_size=64, shuffle_seed=1)

    first, second = _ids(shuffled), _ids(shuffled)
    assert int(ordered.cardinality()) == 16
    assert [len(np.asarray(t)) for _, t in ordered][:2] == [64, 64]
    assert Counter(_ids(ordered)) == expected == Counter(first) == Counter(second)
    assert first != _ids(ordered)
    assert first != second


@pytest.mark.parametrize("shard_count", [1, 4])
def test_workers_read_disjoint_parts_that_cover_the_data(tmp_path: Path, shard_count: int) -> None:
    files = _shards(tmp_path, 600, shard_count)
    spec = make_spec("regression")
    parts = [
        _ids(make_dataset(files, spec, batch_size=50, worker=WorkerShard(index, 2)))
        for index in range(2)
    ]

    assert Counter(parts[0]) + Counter(parts[1]) == Counter(
        ShardReader(spec).read_all(files).targets.tolist()
    )
    assert abs(len(parts[0]) - len(parts[1])) <= 150


def test_repeated_dataset_keeps_going(tmp_path: Path) -> None:
    files = _shards(tmp_path, 100, 1)

    batches = list(make_dataset(files, make_spec("binary"), batch_size=64, repeat=True).take(5))

    assert sum(len(np.asarray(targets)) for _, targets in batches) == 320
