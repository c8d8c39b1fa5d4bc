"""The transform spec as Keras preprocessing layers inside the model, and as a function.

Per feature, in spec order, the model computes (and ``transform_features`` computes the
same with NumPy, for the parity test):

- numeric: NaN → ``fill_value``; clip to ``clip`` when set; z-score with the spec's mean
  and variance (``Normalization``, never adapted); the z-score is bounded by
  ``MAX_ABS_ZSCORE`` so that ±inf or 1e30 stay finite even without a ``clip``; with
  ``bucket_boundaries``, a one-hot bucket of the filled, clipped value
  (``Discretization``) follows;
- vocabulary: ``""`` (missing) → ``fill_value``; one-hot of ``num_oov_buckets`` OOV slots
  (unseen values hashed with FarmHash64) followed by the vocabulary (``StringLookup``);
- hash: ``""`` → ``fill_value``; one-hot of FarmHash64 mod ``hash_buckets`` (``Hashing``).

Missing values reach the model as NaN (numeric) and ``""`` (strings): that is what the
input pipeline produces for nulls and what a serving client sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from cascade.transform.spec import (
    FeatureTransform,
    HashTransform,
    NumericTransform,
    TransformSpec,
    VocabularyTransform,
)

__all__ = [
    "MAX_ABS_ZSCORE",
    "FillEmptyString",
    "build_preprocessing_model",
    "feature_input_dtype",
    "feature_width",
    "hash_indices",
    "make_feature_inputs",
    "preprocessed_width",
    "transform_features",
    "vocabulary_indices",
]

MAX_ABS_ZSCORE = 1e4
"""Bound on a standardized value, so extreme or infinite inputs stay finite."""


def feature_input_dtype(feature: FeatureTransform) -> Literal["float32", "string"]:
    return "float32" if isinstance(feature, NumericTransform) else "string"


def feature_width(feature: FeatureTransform) -> int:
    """How many columns the feature contributes to the preprocessed vector."""
    if isinstance(feature, NumericTransform):
        buckets = len(feature.bucket_boundaries) + 1 if feature.bucket_boundaries else 0
        return 1 + buckets
    if isinstance(feature, VocabularyTransform):
        return feature.num_oov_buckets + len(feature.vocabulary)
    return feature.hash_buckets


def preprocessed_width(spec: TransformSpec) -> int:
    return sum(feature_width(feature) for feature in spec.features)


class FillAndClip(keras.layers.Layer):  # type: ignore[misc]
    """NaN → ``fill_value``, then clip to ``[low, high]`` when bounds are given."""

    def __init__(
        self, fill_value: float, low: float | None, high: float | None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.fill_value, self.low, self.high = fill_value, low, high

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        filled = tf.where(tf.math.is_nan(inputs), tf.cast(self.fill_value, inputs.dtype), inputs)
        if self.low is None or self.high is None:
            return filled
        return tf.clip_by_value(filled, self.low, self.high)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "fill_value": self.fill_value,
            "low": self.low,
            "high": self.high,
        }


class BoundMagnitude(keras.layers.Layer):  # type: ignore[misc]
    def __init__(self, limit: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(inputs, -self.limit, self.limit)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "limit": self.limit}


class FillEmptyString(keras.layers.Layer):  # type: ignore[misc]
    def __init__(self, fill_value: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill_value = fill_value

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        if not self.fill_value:
            return inputs
        return tf.where(tf.equal(inputs, ""), self.fill_value, inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill_value": self.fill_value}


def make_feature_inputs(spec: TransformSpec) -> dict[str, keras.KerasTensor]:
    """One ``keras.Input`` of shape ``(batch,)`` per raw feature, named after it."""
    return {
        feature.name: keras.Input(shape=(), dtype=feature_input_dtype(feature), name=feature.name)
        for feature in spec.features
    }


def _numeric_columns(feature: NumericTransform, raw: keras.KerasTensor) -> list[keras.KerasTensor]:
    low, high = feature.clip if feature.clip is not None else (None, None)
    column = keras.ops.expand_dims(raw, -1)
    cleaned = FillAndClip(feature.fill_value, low, high, name=f"{feature.name}_fill")(column)
    standardized = keras.layers.Normalization(
        mean=[feature.mean], variance=[feature.std**2], name=f"{feature.name}_zscore"
    )(cleaned)
    columns = [BoundMagnitude(MAX_ABS_ZSCORE, name=f"{feature.name}_bound")(standardized)]
    if feature.bucket_boundaries:
        bucketize = keras.layers.Discretization(
            bin_boundaries=list(feature.bucket_boundaries),
            output_mode="one_hot",
            name=f"{feature.name}_buckets",
        )
        columns.append(bucketize(cleaned))
    return columns


def _string_column(
    feature: VocabularyTransform | HashTransform, raw: keras.KerasTensor
) -> keras.KerasTensor:
    filled = FillEmptyString(feature.fill_value, name=f"{feature.name}_fill")(raw)
    column = keras.ops.expand_dims(filled, -1)
    if isinstance(feature, VocabularyTransform):
        lookup = keras.layers.StringLookup(
            vocabulary=list(feature.vocabulary),
            num_oov_indices=feature.num_oov_buckets,
            output_mode="one_hot",
            name=f"{feature.name}_lookup",
        )
        return lookup(column)
    hashing = keras.layers.Hashing(
        num_bins=feature.hash_buckets, output_mode="one_hot", name=f"{feature.name}_hash"
    )
    return hashing(column)


def build_preprocessing_model(spec: TransformSpec) -> keras.Model:
    """Raw feature values (a dict of ``(batch,)`` tensors) → the float32 feature vector."""
    inputs = make_feature_inputs(spec)
    columns: list[keras.KerasTensor] = []
    for feature in spec.features:
        if isinstance(feature, NumericTransform):
            columns.extend(_numeric_columns(feature, inputs[feature.name]))
        else:
            columns.append(_string_column(feature, inputs[feature.name]))
    vector = columns[0] if len(columns) == 1 else keras.layers.Concatenate(name="features")(columns)
    return keras.Model(inputs=inputs, outputs=vector, name="preprocessing")


# The same transform as a plain function -------------------------------------------------

FloatArray = npt.NDArray[np.float32]


def _one_hot(indices: npt.NDArray[np.int64], width: int) -> FloatArray:
    encoded = np.zeros((indices.shape[0], width), dtype=np.float32)
    encoded[np.arange(indices.shape[0]), indices] = 1.0
    return encoded


def _strings(values: npt.ArrayLike, fill_value: str) -> list[str]:
    texts = [
        value.decode() if isinstance(value, bytes) else str(value) for value in np.ravel(values)
    ]
    return [text if text else fill_value for text in texts]


def _farmhash_buckets(texts: list[str], buckets: int) -> npt.NDArray[np.int64]:
    if not texts:
        return np.zeros(0, dtype=np.int64)
    hashed = tf.strings.to_hash_bucket_fast(tf.constant(texts, dtype=tf.string), buckets)
    return np.asarray(hashed.numpy(), dtype=np.int64)


def _transform_numeric(feature: NumericTransform, values: npt.ArrayLike) -> FloatArray:
    column = np.asarray(values, dtype=np.float32).reshape(-1)
    column = np.where(np.isnan(column), np.float32(feature.fill_value), column)
    if feature.clip is not None:
        column = np.clip(column, np.float32(feature.clip[0]), np.float32(feature.clip[1]))
    std = np.maximum(np.sqrt(np.float32(feature.std**2)), np.float32(keras.config.epsilon()))
    with np.errstate(over="ignore", invalid="ignore"):
        zscore = (column - np.float32(feature.mean)) / std
    parts = [np.clip(zscore, -MAX_ABS_ZSCORE, MAX_ABS_ZSCORE).astype(np.float32)[:, None]]
    if feature.bucket_boundaries:
        boundaries = np.asarray(feature.bucket_boundaries, dtype=np.float32)
        buckets = np.searchsorted(boundaries, column, side="right").astype(np.int64)
        parts.append(_one_hot(buckets, len(boundaries) + 1))
    return np.concatenate(parts, axis=1)


def vocabulary_indices(
    feature: VocabularyTransform, values: npt.ArrayLike
) -> npt.NDArray[np.int64]:
    """What ``StringLookup`` returns: OOV slots first (unseen values hashed into them),
    then the vocabulary; ``""`` is the feature's fill value."""
    texts = _strings(values, feature.fill_value)
    positions = {token: index for index, token in enumerate(feature.vocabulary)}
    oov = _farmhash_buckets(texts, feature.num_oov_buckets)
    return np.array(
        [
            feature.num_oov_buckets + positions[text] if text in positions else oov[row]
            for row, text in enumerate(texts)
        ],
        dtype=np.int64,
    )


def hash_indices(feature: HashTransform, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """What ``Hashing`` returns: FarmHash64 mod ``hash_buckets``; ``""`` is the fill value."""
    return _farmhash_buckets(_strings(values, feature.fill_value), feature.hash_buckets)


def transform_features(spec: TransformSpec, features: Mapping[str, npt.ArrayLike]) -> FloatArray:
    """What ``build_preprocessing_model(spec)`` computes, with NumPy: raw columns → vector."""
    parts: list[FloatArray] = []
    for feature in spec.features:
        values = features[feature.name]
        if isinstance(feature, NumericTransform):
            parts.append(_transform_numeric(feature, values))
        elif isinstance(feature, VocabularyTransform):
            parts.append(_one_hot(vocabulary_indices(feature, values), feature_width(feature)))
        else:
            parts.append(_one_hot(hash_indices(feature, values), feature.hash_buckets))
    return np.concatenate(parts, axis=1)
