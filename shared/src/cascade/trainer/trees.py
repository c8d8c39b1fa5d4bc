"""The ``boosted_trees`` family: LightGBM trained on Cascade's transform, compiled into
TensorFlow so the exported SavedModel is served like the network's.

Why LightGBM: a maintained gradient-boosted-trees library whose wheel needs only NumPy
and SciPy beside the project's pins (no TensorFlow, no protobuf), with native
categorical splits and missing-value routing, and the learner practitioners compare
against. Why compiled: the serving container runs stock TensorFlow; a LightGBM booster
would need a second runtime there, and TF-DF / YDF SavedModels need custom ops. Each
tree becomes rows of node arrays and the ensemble a fixed number of vectorised
``gather`` steps (one per level), in float64 as LightGBM decides, so the served model
predicts what the booster predicts (``tests/unit/trainer/test_trees.py`` checks it).

The transform seen by the trees is the spec's, one column per feature
(``tree_columns``): a numeric feature is its value clipped to the spec's ``clip``
(missing stays NaN, which the trees route); a vocabulary feature is its lookup index
(the spec's fill value for ``""``, out-of-vocabulary values hashed into the OOV slots);
a hashed feature is its FarmHash64 bucket. The two categorical kinds are categorical to
LightGBM. Standardisation and bucketisation are for the network: splits are invariant
to them.

Early stopping: ``early_stopping_rounds`` on a seeded 10% holdout of the training split
(the eval split stays unseen until evaluation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from cascade.core.errors import BadInputError
from cascade.core.hyperparameters import Hyperparameters
from cascade.core.observability import RunLogger
from cascade.trainer.callbacks import TensorBoardScalars
from cascade.trainer.data import Examples, ShardReader
from cascade.trainer.fit import FitResult
from cascade.trainer.model import TrainerModel, output_units
from cascade.trainer.preprocessing import (
    FillEmptyString,
    hash_indices,
    make_feature_inputs,
    vocabulary_indices,
)
from cascade.transform.spec import (
    FeatureTransform,
    LabelSpec,
    NumericTransform,
    TransformSpec,
    VocabularyTransform,
)

__all__ = [
    "CompiledEnsemble",
    "TreeEnsemble",
    "compile_booster",
    "train_boosted_trees",
    "tree_columns",
]

HOLDOUT_FRACTION = 0.1
MIN_ROWS_FOR_HOLDOUT = 50
ZERO_THRESHOLD = 1e-35
"""LightGBM's ``kZeroThreshold``: ``|x| <=`` this counts as zero for ``missing_type Zero``."""
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
_OBJECTIVES = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
_METRICS = {"binary": "binary_logloss", "multiclass": "multi_logloss", "regression": "l2"}


# The transform as the trees see it ------------------------------------------------------


def _is_categorical(feature: FeatureTransform) -> bool:
    return not isinstance(feature, NumericTransform)


def _clipped(feature: NumericTransform, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    column = np.asarray(values, dtype=np.float32).astype(np.float64).reshape(-1)
    if feature.clip is None:
        return column
    low, high = (float(np.float32(bound)) for bound in feature.clip)
    return np.clip(column, low, high)  # NaN stays NaN


def tree_columns(spec: TransformSpec, features: Mapping[str, npt.ArrayLike]) -> npt.NDArray[Any]:
    """Raw feature columns → the ``[rows, features]`` float64 matrix the trees split on."""
    columns: list[npt.NDArray[np.float64]] = []
    for feature in spec.features:
        values = features[feature.name]
        if isinstance(feature, NumericTransform):
            columns.append(_clipped(feature, values))
        elif isinstance(feature, VocabularyTransform):
            columns.append(vocabulary_indices(feature, values).astype(np.float64))
        else:
            columns.append(hash_indices(feature, values).astype(np.float64))
    return np.stack(columns, axis=1)


def _tree_input(feature: FeatureTransform, raw: keras.KerasTensor) -> keras.KerasTensor:
    """The Keras half of ``tree_columns`` for one feature: ``(batch,)``, numeric or index."""
    if isinstance(feature, NumericTransform):
        return raw
    filled = FillEmptyString(feature.fill_value, name=f"{feature.name}_fill")(raw)
    if isinstance(feature, VocabularyTransform):
        return keras.layers.StringLookup(
            vocabulary=list(feature.vocabulary),
            num_oov_indices=feature.num_oov_buckets,
            output_mode="int",
            name=f"{feature.name}_lookup",
        )(filled)
    return keras.layers.Hashing(num_bins=feature.hash_buckets, name=f"{feature.name}_hash")(filled)


# The compiled ensemble ------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledEnsemble:
    """Every node of every tree as rows of flat arrays; a leaf's children are itself.

    A categorical split sends ``value`` left when bit ``value % 32`` of
    ``category_bits[category_row[node], value // 32]`` is set (LightGBM's own bitset
    layout); ``category_row`` is -1 for numeric splits and leaves.
    """

    roots: npt.NDArray[np.int32]
    feature: npt.NDArray[np.int32]
    threshold: npt.NDArray[np.float64]
    missing_type: npt.NDArray[np.int32]
    default_left: npt.NDArray[np.bool_]
    left: npt.NDArray[np.int32]
    right: npt.NDArray[np.int32]
    value: npt.NDArray[np.float64]
    category_row: npt.NDArray[np.int32]
    category_bits: npt.NDArray[np.int32]
    depth: int
    outputs: int

    @property
    def trees(self) -> int:
        return int(self.roots.shape[0])


NODE_COLUMNS = (
    "feature",
    "threshold",
    "missing_type",
    "default_left",
    "left",
    "right",
    "value",
    "category_row",
)
"""The per-node arrays of a ``CompiledEnsemble`` (besides ``roots`` and the bitsets)."""


class _NodeArrays:
    """Collects nodes while the booster's JSON dump is walked."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in NODE_COLUMNS}
        self.category_sets: list[list[int]] = []

    def add(self) -> int:
        index = len(self.columns["feature"])
        for name, default in (
            ("feature", 0),
            ("threshold", 0.0),
            ("missing_type", 0),
            ("default_left", False),
            ("left", index),
            ("right", index),
            ("value", 0.0),
            ("category_row", -1),
        ):
            self.columns[name].append(default)
        return index

    def set(self, index: int, **values: Any) -> None:
        for name, value in values.items():
            self.columns[name][index] = value

    def split(self, index: int, node: Mapping[str, Any]) -> None:
        self.set(
            index,
            feature=int(node["split_feature"]),
            missing_type=_MISSING_TYPES[str(node.get("missing_type", "None"))],
            default_left=bool(node.get("default_left", False)),
        )
        if node["decision_type"] == "==":
            categories = [int(part) for part in str(node["threshold"]).split("||") if part]
            self.set(index, category_row=len(self.category_sets))
            self.category_sets.append(categories)
        elif node["decision_type"] == "<=":
            self.set(index, threshold=float(node["threshold"]))
        else:
            raise ValueError(f"unknown LightGBM decision type {node['decision_type']!r}")


def _add_tree(nodes: _NodeArrays, structure: Mapping[str, Any]) -> tuple[int, int]:
    """Append one tree (iteratively: leaf-wise trees can be deep); returns (root, depth)."""
    root = nodes.add()
    depth = 0
    pending: list[tuple[int, Mapping[str, Any], int]] = [(root, structure, 0)]
    while pending:
        index, node, level = pending.pop()
        if "split_feature" not in node:
            nodes.set(index, value=float(node["leaf_value"]))
            continue
        nodes.split(index, node)
        depth = max(depth, level + 1)
        left, right = nodes.add(), nodes.add()
        nodes.set(index, left=left, right=right)
        pending.append((left, node["left_child"], level + 1))
        pending.append((right, node["right_child"], level + 1))
    return root, depth


def compile_booster(booster: lgb.Booster, *, outputs: int) -> CompiledEnsemble:
    """The booster's trees (up to its best iteration) as flat node arrays."""
    dump = booster.dump_model(num_iteration=booster.best_iteration or None)
    nodes = _NodeArrays()
    roots, depth = [], 0
    for tree in dump["tree_info"]:
        root, tree_depth = _add_tree(nodes, tree["tree_structure"])
        roots.append(root)
        depth = max(depth, tree_depth)
    width = max((max(values) + 1 for values in nodes.category_sets if values), default=1)
    words = np.zeros((max(1, len(nodes.category_sets)), -(-width // 32)), dtype=np.uint32)
    for row, values in enumerate(nodes.category_sets):
        for value in values:
            words[row, value // 32] |= np.uint32(1 << (value % 32))
    columns = nodes.columns
    return CompiledEnsemble(
        roots=np.asarray(roots, dtype=np.int32),
        feature=np.asarray(columns["feature"], dtype=np.int32),
        threshold=np.asarray(columns["threshold"], dtype=np.float64),
        missing_type=np.asarray(columns["missing_type"], dtype=np.int32),
        default_left=np.asarray(columns["default_left"], dtype=np.bool_),
        left=np.asarray(columns["left"], dtype=np.int32),
        right=np.asarray(columns["right"], dtype=np.int32),
        value=np.asarray(columns["value"], dtype=np.float64),
        category_row=np.asarray(columns["category_row"], dtype=np.int32),
        category_bits=words.view(np.int32),
        depth=depth,
        outputs=outputs,
    )


class TreeEnsemble(keras.layers.Layer):  # type: ignore[misc]
    """Tree columns (one ``(batch,)`` tensor per feature) → raw scores ``[batch, outputs]``.

    Computes in float64, as LightGBM does: inputs, thresholds and the sum of leaf values.
    Numeric columns are clipped here (NaN kept) so that the layer sees ``tree_columns``.
    """

    _ARRAYS = ("roots", *NODE_COLUMNS, "category_bits")

    def __init__(
        self,
        ensemble: CompiledEnsemble,
        clips: Sequence[tuple[float, float] | None],
        **kwargs: Any,
    ) -> None:
        super().__init__(dtype="float64", trainable=False, **kwargs)
        self.ensemble = ensemble
        self.clips = list(clips)
        # The node arrays as (non-trainable) variables: saved once beside the graph, not
        # as constants copied into every level of every traced signature.
        self.nodes = {name: self._variable(name, getattr(ensemble, name)) for name in self._ARRAYS}

    def _variable(self, name: str, array: npt.NDArray[Any]) -> keras.Variable:
        stored = array.astype(np.int8) if array.dtype == np.bool_ else array
        variable = self.add_weight(
            shape=stored.shape,
            dtype=str(stored.dtype),
            initializer="zeros",
            trainable=False,
            name=name,
        )
        variable.assign(stored)
        return variable

    def _matrix(self, columns: Sequence[tf.Tensor]) -> tf.Tensor:
        parts = []
        for column, clip in zip(columns, self.clips, strict=True):
            value = tf.cast(tf.reshape(column, [-1]), tf.float64)
            if clip is not None:
                bounded = tf.clip_by_value(value, clip[0], clip[1])
                value = tf.where(tf.math.is_nan(value), value, bounded)
            parts.append(value)
        return tf.stack(parts, axis=1)

    def _step(self, arrays: dict[str, tf.Tensor], matrix: tf.Tensor, node: tf.Tensor) -> tf.Tensor:
        value = tf.gather(matrix, tf.gather(arrays["feature"], node), batch_dims=1)
        missing_type = tf.gather(arrays["missing_type"], node)
        is_nan = tf.math.is_nan(value)
        zero = tf.zeros_like(value)
        numeric = tf.where(is_nan & (missing_type != _MISSING_TYPES["NaN"]), zero, value)
        is_missing = (
            (missing_type == _MISSING_TYPES["Zero"]) & (tf.abs(numeric) <= ZERO_THRESHOLD)
        ) | ((missing_type == _MISSING_TYPES["NaN"]) & is_nan)
        numeric_left = tf.where(
            is_missing,
            tf.gather(arrays["default_left"], node) != 0,
            numeric <= tf.gather(arrays["threshold"], node),
        )
        row = tf.gather(arrays["category_row"], node)
        width = 32 * self.ensemble.category_bits.shape[1]
        usable = ~is_nan & (value >= 0.0) & (value < float(width))
        category = tf.cast(tf.where(usable, value, zero), tf.int32)
        word = tf.gather_nd(
            arrays["category_bits"], tf.stack([tf.maximum(row, 0), category // 32], axis=-1)
        )
        member = tf.bitwise.bitwise_and(tf.bitwise.right_shift(word, category % 32), 1) == 1
        go_left = tf.where(row >= 0, member & usable, numeric_left)
        return tf.where(go_left, tf.gather(arrays["left"], node), tf.gather(arrays["right"], node))

    def call(self, columns: Sequence[tf.Tensor]) -> tf.Tensor:
        trees = self.ensemble
        arrays = {name: tf.convert_to_tensor(variable) for name, variable in self.nodes.items()}
        matrix = self._matrix(columns)
        rows = tf.shape(matrix)[0]
        node = tf.tile(arrays["roots"][tf.newaxis, :], [rows, 1])
        for _ in range(trees.depth):
            node = self._step(arrays, matrix, node)
        leaves = tf.gather(arrays["value"], node)
        per_output = tf.reshape(leaves, [rows, trees.trees // trees.outputs, trees.outputs])
        return tf.reduce_sum(per_output, axis=1)


def _head(scores: tf.Tensor, label: LabelSpec) -> tf.Tensor:
    if label.problem_type == "binary":
        return tf.cast(tf.sigmoid(scores), tf.float32)
    if label.problem_type == "multiclass":
        return tf.cast(tf.nn.softmax(scores, axis=-1), tf.float32)
    return tf.cast(scores, tf.float32)


class _Head(keras.layers.Layer):  # type: ignore[misc]
    def __init__(self, label: LabelSpec, **kwargs: Any) -> None:
        super().__init__(dtype="float64", trainable=False, **kwargs)
        self.label = label

    def call(self, scores: tf.Tensor) -> tf.Tensor:
        return _head(scores, self.label)


def _clip(feature: FeatureTransform) -> tuple[float, float] | None:
    if isinstance(feature, NumericTransform) and feature.clip is not None:
        low, high = feature.clip
        return float(np.float32(low)), float(np.float32(high))
    return None


def build_tree_model(spec: TransformSpec, ensemble: CompiledEnsemble) -> TrainerModel:
    """Raw feature inputs → tree columns (``preprocessing``) → ensemble and the head's
    activation (``trainable``), assembled like the network's model, so that
    ``export_serving_model`` exports it the same way."""
    inputs = make_feature_inputs(spec)
    columns = [_tree_input(feature, inputs[feature.name]) for feature in spec.features]
    preprocessing = keras.Model(inputs=inputs, outputs=columns, name="tree_inputs")
    column_inputs = [
        keras.Input(
            shape=(), dtype="float32" if isinstance(f, NumericTransform) else "int64", name=f.name
        )
        for f in spec.features
    ]
    scores = TreeEnsemble(ensemble, [_clip(f) for f in spec.features], name="trees")(column_inputs)
    trainable = keras.Model(
        inputs=column_inputs, outputs=_Head(spec.label, name="head")(scores), name="ensemble"
    )
    model = keras.Model(inputs=inputs, outputs=trainable(preprocessing(inputs)), name="trees")
    return TrainerModel(
        model=model, preprocessing=preprocessing, trainable=trainable, label=spec.label
    )


# Training -------------------------------------------------------------------------------


def _params(spec: TransformSpec, hparams: Hyperparameters) -> dict[str, Any]:
    problem = spec.label.problem_type
    params: dict[str, Any] = {
        "objective": _OBJECTIVES[problem],
        "metric": _METRICS[problem],
        "learning_rate": hparams.shrinkage,
        "num_leaves": hparams.num_leaves,
        "max_depth": hparams.max_depth,
        "min_data_in_leaf": hparams.min_examples,
        "feature_fraction": hparams.feature_fraction,
        "lambda_l2": hparams.l2_regularization,
        "max_bin": hparams.max_bins,
        "seed": hparams.seed,
        "num_threads": os.cpu_count() or 1,
        "verbosity": -1,
    }
    if hparams.subsample < 1.0:
        params.update(bagging_fraction=hparams.subsample, bagging_freq=1)
    if problem == "multiclass":
        params["num_class"] = output_units(spec.label)
    return params


def _holdout(rows: int, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
    order = np.random.default_rng(seed).permutation(rows)
    if rows < MIN_ROWS_FOR_HOLDOUT:
        return order, None
    size = max(1, math.ceil(rows * HOLDOUT_FRACTION))
    return np.sort(order[size:]), np.sort(order[:size])


def _dataset(
    matrix: npt.NDArray[Any], targets: npt.NDArray[Any], categorical: list[int], **kwargs: Any
) -> lgb.Dataset:
    return lgb.Dataset(
        matrix,
        label=targets,
        categorical_feature=categorical,
        free_raw_data=False,
        params={"verbosity": -1},
        **kwargs,
    )


@dataclass(frozen=True)
class TreesResult:
    fit: FitResult
    trained: TrainerModel
    booster: lgb.Booster


def train_boosted_trees(
    spec: TransformSpec,
    hparams: Hyperparameters,
    train_files: Sequence[Path],
    *,
    log: RunLogger,
    tensorboard_dir: Path | None = None,
) -> TreesResult:
    """Fit the booster on the train shards and compile it into a Keras model."""
    examples: Examples = ShardReader(spec).read_all(train_files)
    if len(examples) == 0:
        raise BadInputError("the training split has no labelled rows")
    matrix = tree_columns(spec, examples.features)
    categorical = [i for i, feature in enumerate(spec.features) if _is_categorical(feature)]
    fit_rows, holdout_rows = _holdout(len(examples), hparams.seed)
    train_set = _dataset(matrix[fit_rows], examples.targets[fit_rows], categorical)
    evaluations: dict[str, dict[str, list[float]]] = {}
    callbacks: list[Any] = [lgb.record_evaluation(evaluations)]
    valid_sets, valid_names = [train_set], ["train"]
    if holdout_rows is not None:
        holdout = _dataset(
            matrix[holdout_rows], examples.targets[holdout_rows], categorical, reference=train_set
        )
        valid_sets.append(holdout)
        valid_names.append("holdout")
        callbacks.append(lgb.early_stopping(hparams.early_stopping_rounds, verbose=False))
    booster = lgb.train(
        _params(spec, hparams),
        train_set,
        num_boost_round=hparams.num_trees,
        valid_sets=valid_sets,
        valid_names=valid_names,
        callbacks=callbacks,
    )
    history = _history(evaluations, booster.best_iteration or booster.current_iteration())
    ensemble = compile_booster(booster, outputs=output_units(spec.label))
    rounds = ensemble.trees // ensemble.outputs
    log.info(
        "boosted %d rounds (%d trees, depth %d) on %d rows, holdout %d",
        rounds,
        ensemble.trees,
        ensemble.depth,
        len(fit_rows),
        0 if holdout_rows is None else len(holdout_rows),
    )
    if tensorboard_dir is not None:
        _write_scalars(tensorboard_dir, history)
    fit = FitResult(epochs_trained=rounds, steps=rounds, history=history)
    return TreesResult(fit=fit, trained=build_tree_model(spec, ensemble), booster=booster)


def _history(
    evaluations: Mapping[str, Mapping[str, list[float]]], rounds: int
) -> dict[str, list[float]]:
    """Per-round loss on the fitted rows and the holdout, as Keras names them."""
    history: dict[str, list[float]] = {}
    for name, key in (("train", "loss"), ("holdout", "val_loss")):
        for values in evaluations.get(name, {}).values():
            history[key] = [float(value) for value in values[:rounds]]
    return history


def _write_scalars(log_dir: Path, history: Mapping[str, list[float]]) -> None:
    """The same TensorBoard layout as the network: ``train/`` and ``validation/`` runs,
    ``epoch_loss`` per boosting round."""
    scalars = TensorBoardScalars(log_dir)
    for step in range(max((len(values) for values in history.values()), default=0)):
        scalars.on_epoch_end(step, {k: v[step] for k, v in history.items() if step < len(v)})
    scalars.on_train_end()
