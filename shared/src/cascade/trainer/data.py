"""tf.data input from the transform's Parquet shards.

Shards are downloaded once into a local directory under names chosen here. A shard is
read with pyarrow into NumPy column arrays (numeric → float32 with NaN for nulls,
categorical → strings with ``""`` for nulls, the label encoded by ``LabelEncoder``),
its rows are permuted when shuffling, and it is handed to tf.data in large chunks that
``rebatch`` cuts into training batches — Python touches each chunk, never each row, and
``prefetch`` overlaps reading with training.

Under multi-worker training each worker reads its own part: every ``count``-th shard
when there are at least as many shards as workers, else every ``count``-th row; the
distribution's auto-sharding is switched off because the input is already sharded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from cascade.core.errors import BadInputError
from cascade.trainer.model import class_names
from cascade.trainer.preprocessing import feature_input_dtype
from cascade.trainer.storage import TrainerStorage
from cascade.transform.spec import LabelSpec, TransformSpec

__all__ = [
    "Examples",
    "LabelEncoder",
    "ShardReader",
    "WorkerShard",
    "count_rows",
    "download_shards",
    "make_dataset",
    "numeric_column",
    "steps_for",
    "string_column",
    "target_moments",
]

CHUNK_ROWS = 16384
"""Rows per element handed from Python to tf.data (then rebatched)."""


def download_shards(
    storage: TrainerStorage, uris: Sequence[str], directory: Path, kind: str
) -> list[Path]:
    """Copy shards to ``directory/<kind>-00000.parquet``…; object names never become paths."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        storage.download_file(uri, directory / f"{kind}-{index:05d}.parquet")
        for index, uri in enumerate(uris)
    ]


def count_rows(files: Sequence[Path], label: str | None = None) -> int:
    """Rows in the shards; with ``label``, only rows whose label is present (as read)."""
    if label is None:
        return sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    total = 0
    for path in files:
        column = pq.read_table(path, columns=[label]).column(label)
        total += len(column) - column.null_count
    return total


def target_moments(files: Sequence[Path], label: LabelSpec) -> tuple[float, float]:
    """Mean and standard deviation (1 when constant or absent) of a regression label."""
    values = [
        numeric_column(pq.read_table(path, columns=[label.name]), label.name, path.name)
        for path in files
    ]
    column = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    column = column[np.isfinite(column)].astype(np.float64)
    if column.size == 0:
        return 0.0, 1.0
    std = float(column.std())
    return float(column.mean()), std if std > 0 else 1.0


def _column(table: pa.Table, name: str, source: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise BadInputError(f"column {name!r} is missing", uri=source)
    return table.column(name)


def numeric_column(table: pa.Table, name: str, source: str = "") -> npt.NDArray[np.float32]:
    """The column as float32, nulls as NaN."""
    try:
        values = pc.cast(_column(table, name, source), pa.float32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise BadInputError(f"column {name!r} is not numeric: {error}", uri=source) from None
    filled = pc.fill_null(values, pa.scalar(float("nan"), pa.float32()))
    return np.asarray(filled.to_numpy(), dtype=np.float32)


def string_column(table: pa.Table, name: str, source: str = "") -> npt.NDArray[np.object_]:
    """The column as Python strings (integers in decimal), nulls as ``""``."""
    try:
        values = pc.cast(_column(table, name, source), pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise BadInputError(f"column {name!r} is not text: {error}", uri=source) from None
    return np.asarray(pc.fill_null(values, "").to_numpy(zero_copy_only=False), dtype=object)


class LabelEncoder:
    """Label values → training targets: class indices (classification) or float values.

    A class label's values are compared as strings (``1`` and ``1.0`` both read ``"1"``);
    a value outside the spec's classes is bad input, not something to guess about.
    """

    def __init__(self, label: LabelSpec) -> None:
        self.label = label
        self.classes = class_names(label)

    @property
    def target_dtype(self) -> tf.DType:
        return tf.int32 if self.label.problem_type == "multiclass" else tf.float32

    def encode(self, column: pa.ChunkedArray, source: str = "") -> npt.NDArray[np.generic]:
        if self.label.problem_type == "regression":
            table = pa.table({"label": column})
            return numeric_column(table, "label", source)
        names = pc.cast(column, pa.string())
        indices = pc.index_in(names, value_set=pa.array(self.classes, pa.string()))
        unknown = pc.sum(pc.is_null(indices).cast(pa.int64())).as_py() or 0
        if unknown:
            examples = pc.unique(pc.filter(names, pc.is_null(indices))).to_pylist()[:5]
            raise BadInputError(
                f"{unknown} label values of {self.label.name!r} are not among the classes "
                f"{self.classes}: e.g. {examples}",
                uri=source,
            )
        dtype = np.int32 if self.label.problem_type == "multiclass" else np.float32
        return np.asarray(indices.to_numpy(), dtype=dtype)


@dataclass(frozen=True)
class Examples:
    """Rows of one or more shards as columns: raw features, targets, extra text columns."""

    features: dict[str, npt.NDArray[np.generic]]
    targets: npt.NDArray[np.generic]
    extras: dict[str, npt.NDArray[np.object_]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def take(self, rows: npt.NDArray[np.int64] | slice) -> Examples:
        return Examples(
            features={name: values[rows] for name, values in self.features.items()},
            targets=self.targets[rows],
            extras={name: values[rows] for name, values in self.extras.items()},
        )

    @staticmethod
    def concatenate(parts: Sequence[Examples]) -> Examples:
        first = parts[0]
        return Examples(
            features={n: np.concatenate([p.features[n] for p in parts]) for n in first.features},
            targets=np.concatenate([part.targets for part in parts]),
            extras={n: np.concatenate([p.extras[n] for p in parts]) for n in first.extras},
        )


class ShardReader:
    """Reads a Parquet shard into ``Examples``; rows without a label are dropped."""

    def __init__(self, spec: TransformSpec, extra_columns: Sequence[str] = ()) -> None:
        self.spec = spec
        self.encoder = LabelEncoder(spec.label)
        self.extra_columns = [name for name in extra_columns if name]

    def read(self, path: Path) -> Examples:
        source = path.name
        wanted = {*self.spec.feature_names, self.spec.label.name, *self.extra_columns}
        try:
            table = pq.read_table(path, columns=sorted(wanted & set(pq.read_schema(path).names)))
        except (OSError, pa.ArrowInvalid) as error:
            raise BadInputError(f"cannot read Parquet shard: {error}", uri=source) from None
        label = _column(table, self.spec.label.name, source)
        if label.null_count:
            table = table.filter(pc.is_valid(label))
        features: dict[str, npt.NDArray[np.generic]] = {}
        for feature in self.spec.features:
            if feature_input_dtype(feature) == "float32":
                features[feature.name] = numeric_column(table, feature.name, source)
            else:
                features[feature.name] = string_column(table, feature.name, source)
        return Examples(
            features=features,
            targets=self.encoder.encode(table.column(self.spec.label.name), source),
            extras={name: string_column(table, name, source) for name in self.extra_columns},
        )

    def read_all(self, files: Sequence[Path]) -> Examples:
        if not files:
            raise BadInputError("no shards to read")
        return Examples.concatenate([self.read(path) for path in files])


@dataclass(frozen=True)
class WorkerShard:
    """Which part of the data this worker reads: part ``index`` of ``count``."""

    index: int = 0
    count: int = 1


def _chunks(
    reader: ShardReader,
    files: Sequence[Path],
    row_shard: WorkerShard,
    rng: np.random.Generator | None,
) -> Iterator[tuple[dict[str, npt.NDArray[np.generic]], npt.NDArray[np.generic]]]:
    order = list(files) if rng is None else [files[i] for i in rng.permutation(len(files))]
    for path in order:
        examples = reader.read(path)
        if row_shard.count > 1:
            examples = examples.take(slice(row_shard.index, None, row_shard.count))
        if rng is not None:
            examples = examples.take(rng.permutation(len(examples)))
        for start in range(0, len(examples), CHUNK_ROWS):
            chunk = examples.take(slice(start, start + CHUNK_ROWS))
            yield chunk.features, chunk.targets


def make_dataset(
    files: Sequence[Path],
    spec: TransformSpec,
    *,
    batch_size: int,
    shuffle_seed: int | None = None,
    worker: WorkerShard = WorkerShard(),
    repeat: bool = False,
    rows: int | None = None,
) -> tf.data.Dataset:
    """Batches of ``(raw feature dict, target)`` from this worker's part of the shards.

    ``shuffle_seed`` permutes the shard order and the rows of each shard, differently
    each pass; ``repeat`` loops forever (multi-worker training sets ``steps_per_epoch``
    so that every worker runs the same number of steps). Without ``repeat``, ``rows``
    (``count_rows(files, label)``) declares the number of batches, so Keras knows where an
    epoch ends.
    """
    if not files:
        raise BadInputError("no shards to read")
    if len(files) >= worker.count:
        own_files, row_shard = list(files)[worker.index :: worker.count], WorkerShard()
    else:
        own_files, row_shard = list(files), worker
    reader = ShardReader(spec)
    passes = itertools.count()

    def generate() -> Iterator[tuple[dict[str, npt.NDArray[np.generic]], npt.NDArray[np.generic]]]:
        while True:
            number = next(passes)
            rng = None if shuffle_seed is None else np.random.default_rng([shuffle_seed, number])
            produced = 0
            for chunk in _chunks(reader, own_files, row_shard, rng):
                produced += len(chunk[1])
                yield chunk
            if not repeat:
                return
            if produced == 0:
                raise BadInputError(f"worker {worker.index} of {worker.count} has no rows")

    dataset = tf.data.Dataset.from_generator(generate, output_signature=_signature(reader))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = dataset.rebatch(batch_size)
    if rows is not None and not repeat:
        dataset = dataset.apply(
            tf.data.experimental.assert_cardinality(steps_for(rows, batch_size))
        )
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _signature(reader: ShardReader) -> tuple[dict[str, tf.TensorSpec], tf.TensorSpec]:
    features = {
        feature.name: tf.TensorSpec(shape=(None,), dtype=feature_input_dtype(feature))
        for feature in reader.spec.features
    }
    return features, tf.TensorSpec(shape=(None,), dtype=reader.encoder.target_dtype)


def steps_for(rows: int, global_batch_size: int) -> int:
    return max(1, math.ceil(rows / global_batch_size))
