"""The network family with its embedding tables sharded across parameter servers.

Keras 3 does not train under ``ParameterServerStrategy`` (keras-team/keras#18624), so this
family is plain TensorFlow: a ``tf.Module`` whose variables are created in the strategy's
scope (its partitioner splits each large table along its rows, one shard per ps task at
most), a training step scheduled on the workers by a ``ClusterCoordinator`` (the chief),
and Adagrad applied shard by shard (``IndexedSlices`` for the tables, so a step touches
only the rows its batch looked up).

The network: numeric features exactly as the other network's preprocessing computes them
(fill, clip, z-score, buckets: ``transform_features``); each categorical feature's index
(``StringLookup`` / ``Hashing`` positions: ``vocabulary_indices`` / ``hash_indices``)
looked up in its own table of ``embedding_dim`` columns; all concatenated into the same
MLP and head as the other network.

**Input: the workers read it.** The chief reads the transform's shards once (the same
data and split as every family), encodes them as the step takes them (numeric transform,
vocabulary and hash positions: ``encode_examples``) and writes them as chunks of
``CHUNK_BATCHES`` batches (``write_chunks``: serialized tensors in a ``tf.train.Example``)
to a directory every worker reads (``gs://`` on Google Cloud, a local directory when
every task runs on this host). Each epoch it schedules one closure per chunk, in a new
random order, with only the chunk's path and a seed; the worker that runs it reads the
chunk itself (``tf.io.read_file``), shuffles its rows with the seed, and trains on its
batches. Every training row is seen once per epoch; TensorFlow re-runs a closure whose
worker failed on another worker (or the restarted one), so a chunk a worker was
interrupted in is trained on again — at least once. Why not ``create_per_worker_dataset``:
a dataset function runs in the workers' TensorFlow runtime, not their Python, so it
cannot read Parquet (no TensorFlow op does; ``from_generator``'s ``py_func`` names a
function of the chief's interpreter), and under ``ParameterServerStrategy`` every
worker's ``InputContext`` is pipeline 0 of 1 (the datasets are the same on every
worker, TensorFlow assumes): no worker can pick its own part, and "once per epoch" would
become "about once, sampled". Keras ``StringLookup`` / ``Hashing`` are not needed on the
workers: the positions are computed when the chunks are written (``vocabulary_indices``
/ ``hash_indices``, which give the serving model's layers' positions).

**Checkpoints.** With a checkpoint directory (``AIP_CHECKPOINT_DIR``) the chief saves,
after every epoch, a ``tf.train.Checkpoint`` of the network's variables (a sharded table
saved whole, restored into the same partitioning), the Adagrad accumulators, the
best-weights copies and the loop's progress (epochs, steps, early stopping, each epoch's
losses, a fingerprint of what the run trains) with a ``tf.train.CheckpointManager``
(``MAX_CHECKPOINTS`` kept), every read and write through the chief's CPU. A chief that
starts and finds one restores it and resumes at the next epoch; a checkpoint of another
run (another transform, vocabulary, hyperparameters or sharding) is refused, naming it.

After training the chief builds the serving model outside the strategy — the same
preprocessing layers, ``Embedding`` layers holding the de-sharded tables, the MLP's
weights — and the usual export writes it, so the
signature is the single-machine one by construction (a SavedModel of partitioned
variables cannot be loaded with ``tf.saved_model.load``, which evaluation and serving do).

Without a cluster (a job spec with ``sharding`` run in one process) the same network
trains on the default strategy, unpartitioned.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.core.hyperparameters import Hyperparameters
from cascade.core.job_spec import ParameterServerSpec
from cascade.core.observability import RunLogger
from cascade.trainer.data import Examples, ShardReader
from cascade.trainer.fit import FitResult
from cascade.trainer.model import Rescale, TargetScale, TrainerModel, output_units
from cascade.trainer.preprocessing import (
    FillEmptyString,
    build_preprocessing_model,
    feature_width,
    hash_indices,
    make_feature_inputs,
    preprocessed_width,
    transform_features,
    vocabulary_indices,
)
from cascade.trainer.strategy import PARAMETER_SERVER, StrategyChoice
from cascade.transform.spec import (
    HashTransform,
    LabelSpec,
    NumericTransform,
    TransformSpec,
    VocabularyTransform,
)

__all__ = [
    "CHECKPOINT_FOLDER",
    "CHUNK_BATCHES",
    "EncodedBatch",
    "InputChunks",
    "ShardedNetwork",
    "ShardedTraining",
    "encode_examples",
    "run_fingerprint",
    "serving_model",
    "shard_devices",
    "train_sharded_network",
    "write_chunks",
]

CategoricalFeature = VocabularyTransform | HashTransform
EncodedBatch = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.generic]]
"""One batch as the step takes it: the numeric part of the preprocessed vector
``[rows, numeric width]``, each categorical feature's table index ``[rows, features]``,
the targets ``[rows]``."""

CHUNK_BATCHES = 8
"""Batches per chunk: what one scheduled closure reads and trains on."""
CHECKPOINT_FOLDER = "parameter-servers"
"""The loop's checkpoints, under the job's checkpoint directory (``AIP_CHECKPOINT_DIR``)."""
MAX_CHECKPOINTS = 2
CHIEF_IO_DEVICE = "/job:chief/replica:0/task:0/device:CPU:0"
_CHUNK_STREAM = 7919
_SEED_STRIDE = 1_000_003
_INITIAL_ACCUMULATOR = 0.1
_ADAGRAD_EPSILON = 1e-7
_EMBEDDING_LIMIT = 0.05


def _numeric_spec(spec: TransformSpec) -> TransformSpec | None:
    numeric = [feature for feature in spec.features if isinstance(feature, NumericTransform)]
    return spec.model_copy(update={"features": numeric}) if numeric else None


def _categorical(spec: TransformSpec) -> list[CategoricalFeature]:
    return [
        feature
        for feature in spec.features
        if isinstance(feature, VocabularyTransform | HashTransform)
    ]


def encode_examples(spec: TransformSpec, examples: Examples) -> EncodedBatch:
    """Raw columns → what the network's step takes (the same transform as serving's)."""
    rows = len(examples)
    numeric_spec = _numeric_spec(spec)
    numeric = (
        transform_features(numeric_spec, examples.features)
        if numeric_spec is not None
        else np.zeros((rows, 0), dtype=np.float32)
    )
    columns = [
        vocabulary_indices(feature, examples.features[feature.name])
        if isinstance(feature, VocabularyTransform)
        else hash_indices(feature, examples.features[feature.name])
        for feature in _categorical(spec)
    ]
    ids = np.stack(columns, axis=1) if columns else np.zeros((rows, 0), dtype=np.int64)
    return numeric, ids.astype(np.int64), examples.targets


def _uniform(
    seed: tuple[int, int],
    limit: float,
    shape: Sequence[int],
    dtype: tf.DType,
    partition_shape: Sequence[int] | None = None,
    partition_offset: Sequence[int] | None = None,
) -> tf.Tensor:
    """Uniform in ``[-limit, limit]``; under a partitioner, each shard draws its own rows
    on its parameter server (the full table never exists on the chief)."""
    offset = partition_offset[0] if partition_offset else 0
    return tf.random.stateless_uniform(
        partition_shape or shape,
        seed=[seed[0], seed[1] * 1_000_003 + offset],
        minval=-limit,
        maxval=limit,
        dtype=dtype,
    )


def _variable(name: str, shape: tuple[int, ...], initial: Callable[..., tf.Tensor]) -> tf.Variable:
    return tf.Variable(
        initial_value=functools.partial(initial, shape=shape, dtype=tf.float32),
        shape=shape,
        dtype=tf.float32,
        name=name,
    )


def _twin(part: Any, suffix: str, initial: Callable[..., tf.Tensor]) -> tf.Variable:
    """A variable of ``part``'s shape on ``part``'s device (a shard's twin is never
    partitioned again: colocated variables are not)."""
    with tf.distribute.get_strategy().extended.colocate_vars_with(part):
        return _variable(f"{part.name.split(':')[0]}_{suffix}", tuple(part.shape), initial)


def _components(variable: Any) -> list[Any]:
    """A sharded variable's shards, or the variable itself."""
    return list(variable.variables) if hasattr(variable, "variables") else [variable]


class ShardedNetwork(tf.Module):  # type: ignore[misc]
    """Embedding tables, MLP and head as variables; create it in the strategy's scope."""

    def __init__(
        self,
        spec: TransformSpec,
        hparams: Hyperparameters,
        sharding: ParameterServerSpec,
        target: TargetScale | None = None,
    ) -> None:
        super().__init__(name="sharded_network")
        self.label = spec.label
        self.dropout = hparams.dropout
        self.learning_rate = hparams.learning_rate
        self.target = target or TargetScale()
        self.table_names = [feature.name for feature in _categorical(spec)]
        dim = sharding.embedding_dim
        seed = hparams.seed
        self.tables = [
            _variable(
                f"{feature.name}_embedding",
                (feature_width(feature), dim),
                functools.partial(_uniform, (seed, index), _EMBEDDING_LIMIT),
            )
            for index, feature in enumerate(_categorical(spec))
        ]
        numeric_spec = _numeric_spec(spec)
        width = (preprocessed_width(numeric_spec) if numeric_spec else 0) + dim * len(self.tables)
        sizes = [width, *[hparams.hidden_units] * hparams.hidden_layers, output_units(spec.label)]
        self.kernels, self.biases = [], []
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            limit = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform, as keras.Dense
            name = "head" if layer == len(sizes) - 2 else f"hidden_{layer}"
            initial = functools.partial(_uniform, (seed, 1000 + layer), limit)
            self.kernels.append(_variable(f"{name}_kernel", (fan_in, fan_out), initial))
            self.biases.append(_variable(f"{name}_bias", (fan_out,), _zeros))
        self.accumulators = [_twin(part, "accumulator", _accumulator) for part in self.parts]

    def variables_in_order(self) -> list[Any]:
        return [*self.tables, *self.kernels, *self.biases]

    @property
    def parts(self) -> list[Any]:
        """Every variable, a sharded one as its shards (not tracked again: a checkpoint
        holds each table once, a sharded one whole)."""
        return [part for variable in self.variables_in_order() for part in _components(variable)]

    def outputs(self, numeric: tf.Tensor, ids: tf.Tensor, *, training: bool) -> tf.Tensor:
        """The head's pre-activation ``[rows, units]`` (a standardized target: regression)."""
        looked_up = [
            tf.nn.embedding_lookup(table, ids[:, index]) for index, table in enumerate(self.tables)
        ]
        hidden = tf.concat([numeric, *looked_up], axis=1)
        for kernel, bias in zip(self.kernels[:-1], self.biases[:-1], strict=True):
            hidden = tf.nn.relu(tf.matmul(hidden, kernel) + bias)
            if training and self.dropout > 0:
                hidden = tf.nn.dropout(hidden, rate=self.dropout)
        return tf.matmul(hidden, self.kernels[-1]) + self.biases[-1]

    def predict(self, numeric: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """What the serving model's head answers: probabilities, or the target's units."""
        logits = self.outputs(numeric, ids, training=False)
        if self.label.problem_type == "binary":
            return tf.sigmoid(logits)
        if self.label.problem_type == "multiclass":
            return tf.nn.softmax(logits)
        return logits * self.target.std + self.target.mean

    def losses(self, numeric: tf.Tensor, ids: tf.Tensor, targets: tf.Tensor) -> tuple[Any, Any]:
        """(loss to minimise, loss as the other network reports it), means over rows:
        log loss, or mean squared error — minimised on the standardized target."""
        logits = self.outputs(numeric, ids, training=True)
        return self._losses(logits, targets)

    def _losses(self, logits: tf.Tensor, targets: tf.Tensor) -> tuple[Any, Any]:
        problem = self.label.problem_type
        if problem == "binary":
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=tf.cast(targets, tf.float32), logits=tf.reshape(logits, [-1])
                )
            )
            return loss, loss
        if problem == "multiclass":
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=tf.cast(targets, tf.int32), logits=logits
                )
            )
            return loss, loss
        scaled = (tf.cast(targets, tf.float32) - self.target.mean) / self.target.std
        loss = tf.reduce_mean(tf.square(tf.reshape(logits, [-1]) - scaled))
        return loss, loss * self.target.std**2

    def train_step(self, numeric: tf.Tensor, ids: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """One Adagrad step on this batch; returns ``[loss x rows, rows]`` of the batch."""
        with tf.GradientTape() as tape:
            loss, reported = self.losses(numeric, ids, targets)
        gradients = tape.gradient(loss, self.parts)
        for part, accumulator, gradient in zip(
            self.parts, self.accumulators, gradients, strict=True
        ):
            if gradient is not None:
                _adagrad(part, accumulator, gradient, self.learning_rate)
        return tf.stack(
            [
                reported * tf.cast(tf.shape(targets)[0], tf.float32),
                tf.cast(tf.shape(targets)[0], tf.float32),
            ]
        )

    def eval_step(self, numeric: tf.Tensor, ids: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """``[loss x rows, rows]`` of this batch, without dropout."""
        _, reported = self._losses(self.outputs(numeric, ids, training=False), targets)
        rows = tf.cast(tf.shape(targets)[0], tf.float32)
        return tf.stack([reported * rows, rows])


def _zeros(
    shape: Sequence[int],
    dtype: tf.DType,
    partition_shape: Sequence[int] | None = None,
    partition_offset: Sequence[int] | None = None,
) -> tf.Tensor:
    return tf.zeros(partition_shape or shape, dtype)


def _accumulator(
    shape: Sequence[int],
    dtype: tf.DType,
    partition_shape: Sequence[int] | None = None,
    partition_offset: Sequence[int] | None = None,
) -> tf.Tensor:
    return tf.fill(partition_shape or shape, tf.constant(_INITIAL_ACCUMULATOR, dtype))


def _adagrad(variable: Any, accumulator: Any, gradient: Any, learning_rate: float) -> None:
    """Adagrad on one variable (a shard): dense, or only the rows an ``IndexedSlices``
    gradient names (repeated rows summed first)."""
    if isinstance(gradient, tf.IndexedSlices):
        rows, positions = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(rows)[0])
        accumulator.scatter_add(tf.IndexedSlices(tf.square(values), rows))
        scale = tf.sqrt(tf.gather(accumulator, rows)) + _ADAGRAD_EPSILON
        variable.scatter_sub(tf.IndexedSlices(learning_rate * values / scale, rows))
        return
    accumulator.assign_add(tf.square(gradient))
    variable.assign_sub(learning_rate * gradient / (tf.sqrt(accumulator) + _ADAGRAD_EPSILON))


class _Result(Protocol):
    def fetch(self) -> Any: ...


class _Scheduler(Protocol):
    def schedule(self, function: Any, args: tuple[Any, ...]) -> _Result: ...

    def join(self) -> None: ...


@dataclass(frozen=True)
class _Done:
    value: Any

    def fetch(self) -> Any:
        return self.value


class _InProcess:
    """Runs each closure at once: training without a cluster."""

    def schedule(self, function: Any, args: tuple[Any, ...]) -> _Result:
        return _Done(function(*args))

    def join(self) -> None:
        return None


@dataclass(frozen=True)
class ShardedTraining:
    """A finished run: the network (its variables still on the parameter servers), what
    the fit did, and the serving model holding a de-sharded copy."""

    network: ShardedNetwork
    fit: FitResult
    trained: TrainerModel


def _batches(
    spec: TransformSpec, size: int, files: Sequence[Path], rng: np.random.Generator | None
) -> Iterator[EncodedBatch]:
    """Shard by shard (in a random order when shuffling, rows permuted), cut into batches
    of ``size`` rows across shard boundaries (the last one may be smaller), as the other
    network's input pipeline rebatches."""
    reader = ShardReader(spec)
    order = list(files) if rng is None else [files[i] for i in rng.permutation(len(files))]
    pending: EncodedBatch | None = None
    for path in order:
        examples = reader.read(path)
        if rng is not None:
            examples = examples.take(rng.permutation(len(examples)))
        encoded = encode_examples(spec, examples)
        if pending is not None:
            encoded = _joined(pending, encoded)
        rows = len(encoded[2])
        full = rows - rows % size
        for start in range(0, full, size):
            yield _rows(encoded, start, start + size)
        pending = _rows(encoded, full, rows)
    if pending is not None and len(pending[2]):
        yield pending


def _rows(batch: EncodedBatch, start: int, end: int) -> EncodedBatch:
    numeric, ids, targets = batch
    return numeric[start:end], ids[start:end], targets[start:end]


def _joined(first: EncodedBatch, second: EncodedBatch) -> EncodedBatch:
    numeric = np.concatenate([first[0], second[0]])
    return numeric, np.concatenate([first[1], second[1]]), np.concatenate([first[2], second[2]])


@dataclass(frozen=True)
class InputChunks:
    """One split written for the workers: each chunk's file (local or ``gs://``) and rows."""

    paths: list[str]
    rows: list[int]
    target_dtype: tf.DType

    @property
    def total_rows(self) -> int:
        return sum(self.rows)


def _feature(value: tf.Tensor) -> tf.train.Feature:
    serialized = tf.io.serialize_tensor(value).numpy()
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[serialized]))


def write_chunks(
    spec: TransformSpec,
    files: Sequence[Path],
    directory: str,
    kind: str,
    *,
    chunk_rows: int,
    rng: np.random.Generator | None,
) -> InputChunks:
    """The split's rows encoded as the step takes them (``encode_examples``: vocabulary
    and hash positions computed here, once), in chunks of ``chunk_rows`` rows across
    shard boundaries, each a ``tf.train.Example`` of three serialized tensors in
    ``<directory>/<kind>-NNNNN.chunk`` — a format TensorFlow's own ops read on a worker.
    With ``rng``, the shard order and each shard's rows are permuted first. Written
    whole each time (a restarted chief rewrites the same files)."""
    tf.io.gfile.makedirs(directory)
    target_dtype = ShardReader(spec).encoder.target_dtype
    paths, rows = [], []
    for index, (numeric, ids, targets) in enumerate(_batches(spec, chunk_rows, files, rng)):
        example = tf.train.Example(
            features=tf.train.Features(
                feature={
                    "numeric": _feature(tf.constant(numeric, tf.float32)),
                    "ids": _feature(tf.constant(ids, tf.int64)),
                    "targets": _feature(tf.constant(targets, target_dtype)),
                }
            )
        )
        path = f"{directory.rstrip('/')}/{kind}-{index:05d}.chunk"
        with tf.io.gfile.GFile(path, "wb") as output:
            output.write(example.SerializeToString())
        paths.append(path)
        rows.append(len(targets))
    return InputChunks(paths, rows, target_dtype)


_CHUNK_FEATURES = {
    name: tf.io.FixedLenFeature([], tf.string) for name in ("numeric", "ids", "targets")
}


class _ChunkSteps:
    """The closures the coordinator schedules: each names one chunk file, which the worker
    running it reads itself (``tf.io.read_file``: the chief sends a path and a seed, never
    rows), then trains (or evaluates) on its batches in order. Each read is logged on the
    worker's own standard error."""

    def __init__(self, network: ShardedNetwork, batch_size: int, target_dtype: tf.DType) -> None:
        self._network = network
        self._size = batch_size
        self._target_dtype = target_dtype
        signature = [tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64)]
        self.train = tf.function(self._train, input_signature=signature)
        self.evaluate = tf.function(self._evaluate, input_signature=signature[:1])

    def _read(self, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_single_example(tf.io.read_file(path), _CHUNK_FEATURES)
        numeric = tf.io.parse_tensor(parsed["numeric"], tf.float32)
        ids = tf.io.parse_tensor(parsed["ids"], tf.int64)
        targets = tf.io.parse_tensor(parsed["targets"], self._target_dtype)
        tf.print("cascade-ps: read", path, tf.shape(targets)[0], "rows", output_stream=sys.stderr)
        return numeric, ids, targets

    def _over_batches(
        self, chunk: tuple[tf.Tensor, tf.Tensor, tf.Tensor], step: Callable[..., tf.Tensor]
    ) -> tf.Tensor:
        """``[loss x rows, rows, batches]`` of ``step`` over the chunk's batches."""
        numeric, ids, targets = chunk
        rows = tf.shape(targets)[0]
        batches = (rows + self._size - 1) // self._size
        totals = tf.zeros([2], tf.float32)
        for batch in tf.range(batches):
            start = batch * self._size
            end = tf.minimum(start + self._size, rows)
            totals += step(numeric[start:end], ids[start:end], targets[start:end])
        return tf.concat([totals, [tf.cast(batches, tf.float32)]], axis=0)

    def _train(self, path: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        numeric, ids, targets = self._read(path)
        noise = tf.random.stateless_uniform(tf.shape(targets)[:1], seed=seed)
        order = tf.argsort(noise)
        shuffled = (tf.gather(numeric, order), tf.gather(ids, order), tf.gather(targets, order))
        return self._over_batches(shuffled, self._network.train_step)

    def _evaluate(self, path: tf.Tensor) -> tf.Tensor:
        return self._over_batches(self._read(path), self._network.eval_step)


def _totals(results: list[_Result]) -> npt.NDArray[np.float64]:
    """``[loss x rows, rows, batches]`` summed over the closures' results."""
    if not results:
        return np.zeros(3)
    fetched = [np.asarray(result.fetch(), dtype=np.float64) for result in results]
    return np.asarray(np.sum(fetched, axis=0), dtype=np.float64)


def _mean_loss(totals: npt.NDArray[np.float64]) -> float:
    return float(totals[0] / totals[1]) if totals[1] else float("nan")


class _BestWeights(tf.Module):  # type: ignore[misc]
    """Early stopping's ``restore_best_weights``: a copy of every variable (shard) on its
    own parameter server, assigned shard to shard (no table travels to the chief)."""

    def __init__(self, network: ShardedNetwork) -> None:
        super().__init__(name="best_weights")
        self._network = network
        self.copies = [_twin(part, "best", _zeros) for part in network.parts]

    @tf.function  # type: ignore[untyped-decorator]
    def keep(self) -> None:
        for copy, part in zip(self.copies, self._network.parts, strict=True):
            copy.assign(part)

    @tf.function  # type: ignore[untyped-decorator]
    def restore(self) -> None:
        for copy, part in zip(self.copies, self._network.parts, strict=True):
            part.assign(copy)


class _Progress(tf.Module):  # type: ignore[misc]
    """The loop's own state, checkpointed beside the variables: epochs done, optimizer
    steps, early stopping's best eval loss and patience, each epoch's losses, and the
    fingerprint of what the run trains (a checkpoint of another one is refused)."""

    def __init__(self, epochs: int, fingerprint: str) -> None:
        super().__init__(name="progress")
        self.epoch = tf.Variable(0, dtype=tf.int64, name="epoch")
        self.steps = tf.Variable(0, dtype=tf.int64, name="steps")
        self.best_loss = tf.Variable(math.inf, dtype=tf.float64, name="best_loss")
        self.waited = tf.Variable(0, dtype=tf.int64, name="waited")
        self.stopped = tf.Variable(False, name="stopped")
        self.history = tf.Variable(
            tf.fill([epochs, 2], tf.constant(math.nan, tf.float64)), name="history"
        )
        self.fingerprint = tf.Variable(fingerprint, dtype=tf.string, name="fingerprint")

    def fit(self) -> FitResult:
        done = int(self.epoch.numpy())
        history = self.history.numpy()[:done]
        return FitResult(
            epochs_trained=done,
            steps=int(self.steps.numpy()),
            history={
                "loss": [float(value) for value in history[:, 0]],
                "val_loss": [float(value) for value in history[:, 1]],
            },
        )


FINGERPRINT_KEY = "progress/fingerprint/.ATTRIBUTES/VARIABLE_VALUE"
"""Where a checkpoint of this loop holds its run's fingerprint."""


def run_fingerprint(
    spec: TransformSpec,
    hparams: Hyperparameters,
    sharding: ParameterServerSpec,
    target: TargetScale | None,
) -> str:
    """What the checkpointed state depends on: the transform (vocabularies, hash buckets,
    files), the hyperparameters, the sharding and the regression target's scale."""
    scale = target or TargetScale()
    document = {
        "transform": spec.model_dump(mode="json"),
        "hyperparameters": hparams.model_dump(mode="json"),
        "sharding": sharding.model_dump(mode="json"),
        "target": [scale.mean, scale.std],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _Checkpoints:
    """``tf.train.CheckpointManager`` over the network, its accumulators, the best-weights
    copies and the loop's progress; ``options`` route every read and write through the
    chief's CPU (a cluster's ps tasks need no access to the directory)."""

    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager
    options: tf.train.CheckpointOptions

    def save(self, epochs_done: int) -> str:
        return str(self.manager.save(checkpoint_number=epochs_done, options=self.options))


def _restore(checkpoints: _Checkpoints, progress: _Progress, log: RunLogger) -> str | None:
    """Restore the newest checkpoint, if any; a checkpoint of another run (another
    transform, vocabulary, hyperparameters or sharding) is refused, naming it."""
    latest = checkpoints.manager.latest_checkpoint
    if not latest:
        return None
    expected = progress.fingerprint.numpy().decode()
    try:
        reader = tf.train.load_checkpoint(latest)
        has_fingerprint = reader.has_tensor(FINGERPRINT_KEY)
        saved = reader.get_tensor(FINGERPRINT_KEY).decode() if has_fingerprint else "none"
    except (ValueError, tf.errors.OpError) as error:
        raise InvalidConfigError(f"checkpoint {latest} cannot be read: {error}") from None
    if saved != expected:
        raise InvalidConfigError(
            f"checkpoint {latest} was written by another run (fingerprint {saved[:12]}, this "
            f"run {expected[:12]}): the transform (vocabularies, hash buckets), hyperparameters "
            "or sharding differ; its directory belongs to one run, so it is neither restored "
            "nor overwritten"
        )
    try:
        status = checkpoints.checkpoint.restore(latest, options=checkpoints.options)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise InvalidConfigError(f"checkpoint {latest} does not fit this run: {error}") from None
    log.info(
        "restored checkpoint %s: %d epochs done, %d steps; resuming at epoch %d",
        latest,
        int(progress.epoch.numpy()),
        int(progress.steps.numpy()),
        int(progress.epoch.numpy()) + 1,
    )
    return str(latest)


def _checkpoints(
    directory: str,
    choice: StrategyChoice,
    parts: dict[str, tf.Module],
) -> _Checkpoints:
    checkpoint = tf.train.Checkpoint(**parts)
    manager = tf.train.CheckpointManager(
        checkpoint, directory, max_to_keep=MAX_CHECKPOINTS, checkpoint_name="epoch"
    )
    device = CHIEF_IO_DEVICE if choice.kind == PARAMETER_SERVER else None
    return _Checkpoints(
        checkpoint, manager, tf.train.CheckpointOptions(experimental_io_device=device)
    )


def train_sharded_network(
    choice: StrategyChoice,
    spec: TransformSpec,
    hparams: Hyperparameters,
    sharding: ParameterServerSpec,
    *,
    train_files: list[Path],
    eval_files: list[Path],
    log: RunLogger,
    target: TargetScale | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    input_dir: str | None = None,
    checkpoint_dir: str | None = None,
) -> ShardedTraining:
    """Train through the cluster's coordinator (in this process without a cluster); early
    stopping on the eval loss keeps the best epoch's weights.

    ``input_dir`` (local or ``gs://``, readable by every worker; default a temporary
    directory, for a cluster on this host) receives the splits as chunks the workers read
    (``write_chunks``). With ``checkpoint_dir``, each epoch's state is saved there and a
    run that finds a checkpoint resumes at the epoch after it."""
    scratch = (
        tempfile.TemporaryDirectory(prefix="cascade-ps-input-")
        if input_dir is None
        else contextlib.nullcontext(input_dir)
    )
    with scratch as folder:
        return _train(
            choice,
            spec,
            hparams,
            sharding,
            train_files,
            eval_files,
            log,
            target,
            on_epoch,
            folder,
            checkpoint_dir,
        )


def _train(
    choice: StrategyChoice,
    spec: TransformSpec,
    hparams: Hyperparameters,
    sharding: ParameterServerSpec,
    train_files: list[Path],
    eval_files: list[Path],
    log: RunLogger,
    target: TargetScale | None,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    input_dir: str,
    checkpoint_dir: str | None,
) -> ShardedTraining:
    tf.random.set_seed(hparams.seed)
    chunk_rows = hparams.batch_size * CHUNK_BATCHES
    shuffled = np.random.default_rng([hparams.seed, _CHUNK_STREAM])
    train = write_chunks(spec, train_files, input_dir, "train", chunk_rows=chunk_rows, rng=shuffled)
    if not train.paths:
        raise BadInputError("the training split has no rows with a label")
    evaluation = write_chunks(spec, eval_files, input_dir, "eval", chunk_rows=chunk_rows, rng=None)
    with choice.strategy.scope():
        network = ShardedNetwork(spec, hparams, sharding, target)
        best = _BestWeights(network)
    progress = _Progress(hparams.epochs, run_fingerprint(spec, hparams, sharding, target))
    checkpoints = None
    if checkpoint_dir:
        directory = f"{checkpoint_dir.rstrip('/')}/{CHECKPOINT_FOLDER}"
        parts = {"network": network, "best": best, "progress": progress}
        checkpoints = _checkpoints(directory, choice, parts)
        _restore(checkpoints, progress, log)
    scheduler: _Scheduler = (
        tf.distribute.coordinator.ClusterCoordinator(choice.strategy)
        if choice.kind == PARAMETER_SERVER
        else _InProcess()
    )
    steps = _ChunkSteps(network, hparams.batch_size, train.target_dtype)
    for epoch in range(int(progress.epoch.numpy()), hparams.epochs):
        if bool(progress.stopped.numpy()):
            break
        order = np.random.default_rng([hparams.seed, epoch]).permutation(len(train.paths))
        trained = [
            scheduler.schedule(
                steps.train,
                args=(
                    tf.constant(train.paths[index]),
                    tf.constant([hparams.seed, epoch * _SEED_STRIDE + index], tf.int64),
                ),
            )
            for index in order
        ]
        scheduler.join()
        evaluated = [
            scheduler.schedule(steps.evaluate, args=(tf.constant(path),))
            for path in evaluation.paths
        ]
        scheduler.join()
        train_totals = _totals(trained)
        logs = {"loss": _mean_loss(train_totals), "val_loss": _mean_loss(_totals(evaluated))}
        _record(progress, epoch, logs, int(train_totals[2]), hparams.early_stopping_patience, best)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 6) for k, v in logs.items()})
        if on_epoch is not None:
            on_epoch(epoch, logs)
        if checkpoints is not None:
            log.info("saved checkpoint %s", checkpoints.save(epoch + 1))
    if math.isfinite(float(progress.best_loss.numpy())):
        best.restore()
    return ShardedTraining(network, progress.fit(), serving_model(network, spec, sharding))


def _record(
    progress: _Progress,
    epoch: int,
    logs: dict[str, float],
    steps: int,
    patience: int,
    best: _BestWeights,
) -> None:
    """One epoch into the progress: its losses, its steps, early stopping's bookkeeping."""
    progress.history[epoch].assign([logs["loss"], logs["val_loss"]])
    progress.steps.assign_add(steps)
    progress.epoch.assign(epoch + 1)
    if logs["val_loss"] < float(progress.best_loss.numpy()):
        progress.best_loss.assign(logs["val_loss"])
        progress.waited.assign(0)
        best.keep()
    else:
        progress.waited.assign_add(1)
        if int(progress.waited.numpy()) >= patience:
            progress.stopped.assign(True)


def shard_devices(network: ShardedNetwork) -> dict[str, list[str]]:
    """Each table's shards' devices (one entry: not partitioned)."""
    return {
        name: [part.device for part in _components(table)]
        for name, table in zip(network.table_names, network.tables, strict=True)
    }


def _string_ids(feature: CategoricalFeature, raw: keras.KerasTensor) -> keras.KerasTensor:
    filled = FillEmptyString(feature.fill_value, name=f"{feature.name}_fill")(raw)
    column = keras.ops.expand_dims(filled, -1)
    if isinstance(feature, VocabularyTransform):
        return keras.layers.StringLookup(
            vocabulary=list(feature.vocabulary),
            num_oov_indices=feature.num_oov_buckets,
            output_mode="int",
            name=f"{feature.name}_lookup",
        )(column)
    return keras.layers.Hashing(
        num_bins=feature.hash_buckets, output_mode="int", name=f"{feature.name}_hash"
    )(column)


def _dense(tensor: Any) -> npt.NDArray[np.float32]:
    """A variable's value on the chief: a sharded one concatenated (the de-sharded copy)."""
    return np.asarray(tf.convert_to_tensor(tensor).numpy(), dtype=np.float32)


def _build_mlp(width: int, network: ShardedNetwork, label: LabelSpec) -> keras.Model:
    vector = keras.Input(shape=(width,), dtype="float32", name="preprocessed")
    hidden = vector
    layers = len(network.kernels)
    activation = {"binary": "sigmoid", "multiclass": "softmax", "regression": None}
    for index, (kernel, bias) in enumerate(zip(network.kernels, network.biases, strict=True)):
        last = index == layers - 1
        dense = keras.layers.Dense(
            int(kernel.shape[1]),
            activation=activation[label.problem_type] if last else "relu",
            name="head" if last else f"hidden_{index}",
        )
        hidden = dense(hidden)
        dense.set_weights([_dense(kernel), _dense(bias)])
    if label.problem_type == "regression":
        target = network.target
        hidden = Rescale(target.std, target.mean, name="target_scale")(hidden)
    return keras.Model(inputs=vector, outputs=hidden, name="mlp")


def serving_model(
    network: ShardedNetwork, spec: TransformSpec, sharding: ParameterServerSpec
) -> TrainerModel:
    """The trained network as a Keras model outside any strategy, from raw features, with
    de-sharded copies of its tables: what ``export_serving_model`` writes."""
    inputs = make_feature_inputs(spec)
    parts: list[keras.KerasTensor] = []
    numeric_spec = _numeric_spec(spec)
    if numeric_spec is not None:
        numeric = build_preprocessing_model(numeric_spec)
        parts.append(
            numeric({feature.name: inputs[feature.name] for feature in numeric_spec.features})
        )
    for feature, table in zip(_categorical(spec), network.tables, strict=True):
        embedding = keras.layers.Embedding(
            feature_width(feature), sharding.embedding_dim, name=f"{feature.name}_embedding"
        )
        looked_up = embedding(_string_ids(feature, inputs[feature.name]))
        embedding.set_weights([_dense(table)])
        parts.append(keras.layers.Flatten(name=f"{feature.name}_vector")(looked_up))
    vector = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    preprocessing = keras.Model(inputs=inputs, outputs=vector, name="preprocessing")
    width = int(vector.shape[-1])
    trainable = _build_mlp(width, network, spec.label)
    model = keras.Model(inputs=inputs, outputs=trainable(preprocessing(inputs)), name="cascade")
    return TrainerModel(
        model=model, preprocessing=preprocessing, trainable=trainable, label=spec.label
    )
