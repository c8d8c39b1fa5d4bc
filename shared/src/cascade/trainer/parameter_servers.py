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

The chief reads the transform's shards (the same data and split as every family) and
sends each batch with its step; workers hold no data. After training it builds the
serving model outside the strategy — the same preprocessing layers, ``Embedding`` layers
holding the de-sharded tables, the MLP's weights — and the usual export writes it, so the
signature is the single-machine one by construction (a SavedModel of partitioned
variables cannot be loaded with ``tf.saved_model.load``, which evaluation and serving do).

Without a cluster (a job spec with ``sharding`` run in one process) the same network
trains on the default strategy, unpartitioned.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from cascade.core.errors import BadInputError
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
    "EncodedBatch",
    "ShardedNetwork",
    "ShardedTraining",
    "encode_examples",
    "serving_model",
    "shard_devices",
    "train_sharded_network",
]

CategoricalFeature = VocabularyTransform | HashTransform
EncodedBatch = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.generic]]
"""One batch as the step takes it: the numeric part of the preprocessed vector
``[rows, numeric width]``, each categorical feature's table index ``[rows, features]``,
the targets ``[rows]``."""

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
        self.parts = [
            part for variable in self.variables_in_order() for part in _components(variable)
        ]
        self.accumulators = [_twin(part, "accumulator", _accumulator) for part in self.parts]

    def variables_in_order(self) -> list[Any]:
        return [*self.tables, *self.kernels, *self.biases]

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
    """Runs each step at once: training without a cluster."""

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


def _mean_loss(results: list[_Result]) -> float:
    """The mean over rows of the batches' ``[loss x rows, rows]``."""
    if not results:
        return float("nan")
    totals = np.sum([np.asarray(result.fetch()) for result in results], axis=0)
    return float(totals[0] / totals[1])


class _BestWeights:
    """Early stopping's ``restore_best_weights``: a copy of every variable (shard) on its
    own parameter server, assigned shard to shard (no table travels to the chief)."""

    def __init__(self, network: ShardedNetwork) -> None:
        self._network = network
        self._copies = [_twin(part, "best", _zeros) for part in network.parts]

    @tf.function  # type: ignore[untyped-decorator]
    def keep(self) -> None:
        for copy, part in zip(self._copies, self._network.parts, strict=True):
            copy.assign(part)

    @tf.function  # type: ignore[untyped-decorator]
    def restore(self) -> None:
        for copy, part in zip(self._copies, self._network.parts, strict=True):
            part.assign(copy)


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
) -> ShardedTraining:
    """Train on the chief through the cluster's coordinator (in this process without a
    cluster); early stopping on the eval loss keeps the best epoch's weights."""
    tf.random.set_seed(hparams.seed)
    with choice.strategy.scope():
        network = ShardedNetwork(spec, hparams, sharding, target)
        best = _BestWeights(network)
    scheduler: _Scheduler = (
        tf.distribute.coordinator.ClusterCoordinator(choice.strategy)
        if choice.kind == PARAMETER_SERVER
        else _InProcess()
    )
    train_step = tf.function(network.train_step)
    eval_step = tf.function(network.eval_step)
    size = hparams.batch_size
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    steps, best_loss, waited = 0, math.inf, 0
    for epoch in range(hparams.epochs):
        rng = np.random.default_rng([hparams.seed, epoch])
        trained = [
            scheduler.schedule(train_step, args=batch)
            for batch in _batches(spec, size, train_files, rng)
        ]
        scheduler.join()
        if not trained:
            raise BadInputError("the training split has no rows with a label")
        evaluated = [
            scheduler.schedule(eval_step, args=batch)
            for batch in _batches(spec, size, eval_files, None)
        ]
        scheduler.join()
        steps += len(trained)
        logs = {"loss": _mean_loss(trained), "val_loss": _mean_loss(evaluated)}
        for name, value in logs.items():
            history[name].append(value)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 6) for k, v in logs.items()})
        if on_epoch is not None:
            on_epoch(epoch, logs)
        if logs["val_loss"] < best_loss:
            best_loss, waited = logs["val_loss"], 0
            best.keep()
        else:
            waited += 1
            if waited >= hparams.early_stopping_patience:
                break
    if math.isfinite(best_loss):
        best.restore()
    fit = FitResult(epochs_trained=len(history["loss"]), steps=steps, history=history)
    return ShardedTraining(network, fit, serving_model(network, spec, sharding))


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
