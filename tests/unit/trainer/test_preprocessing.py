"""The transform spec as Keras layers inside the model equals the plain function, and both
compute what the spec says, on ordinary and awkward values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cascade.trainer.preprocessing import (
    MAX_ABS_ZSCORE,
    build_preprocessing_model,
    feature_width,
    preprocessed_width,
    transform_features,
)
from cascade.transform.spec import HashTransform, VocabularyTransform
from tests.unit.trainer.builders import make_spec, numeric, sample_table


def _one_row_spec(feature: object) -> object:
    spec = make_spec("binary")
    return spec.model_copy(update={"features": [feature]})


def test_numeric_fills_clips_standardizes_and_buckets() -> None:
    spec = _one_row_spec(
        numeric(
            "age", 40.0, 10.0, fill_value=30.0, clip=(18.0, 90.0), bucket_boundaries=[25.0, 50.0]
        )
    )
    values = np.array([40.0, np.nan, 100.0, 25.0, -np.inf], dtype=np.float32)

    vectors = transform_features(spec, {"age": values})

    np.testing.assert_allclose(vectors[:, 0], [0.0, -1.0, 5.0, -1.5, -2.2], rtol=1e-6)
    # buckets of the filled, clipped value: [<25, 25..50, >=50]; 25 belongs to the middle one
    np.testing.assert_array_equal(np.argmax(vectors[:, 1:], axis=1), [1, 1, 2, 1, 0])
    assert vectors.shape == (5, feature_width(spec.features[0]))


def test_numeric_without_clip_bounds_extreme_values() -> None:
    spec = _one_row_spec(numeric("loan", 0.0, 1.0))

    vectors = transform_features(spec, {"loan": np.array([1e30, -np.inf, np.inf], np.float32)})

    np.testing.assert_array_equal(vectors[:, 0], [MAX_ABS_ZSCORE, -MAX_ABS_ZSCORE, MAX_ABS_ZSCORE])


def test_vocabulary_puts_vocabulary_after_oov_slots_and_fills_missing() -> None:
    feature = VocabularyTransform(
        name="job",
        vocabulary=["a", "b", "__missing__"],
        num_oov_buckets=2,
        fill_value="__missing__",
    )
    spec = _one_row_spec(feature)

    vectors = transform_features(spec, {"job": np.array(["b", "", "a", "zzz"], dtype=object)})

    assert vectors.shape == (4, 5)
    assert np.argmax(vectors[0]) == 3  # "b": 2 OOV slots, then a=2, b=3, __missing__=4
    assert np.argmax(vectors[1]) == 4  # "" is missing → fill value, which is in the vocabulary
    assert np.argmax(vectors[2]) == 2
    assert np.argmax(vectors[3]) in (0, 1)  # unseen → one of the OOV slots
    np.testing.assert_array_equal(vectors.sum(axis=1), np.ones(4))


def test_hash_is_stable_farmhash() -> None:
    spec = _one_row_spec(HashTransform(name="region", hash_buckets=8))
    texts = np.array(["north", "south", "north"], dtype=object)

    vectors = transform_features(spec, {"region": texts})

    expected = tf.strings.to_hash_bucket_fast(["north", "south", "north"], 8).numpy()
    np.testing.assert_array_equal(np.argmax(vectors, axis=1), expected)


def _awkward_rows(count: int) -> dict[str, np.ndarray]:
    table = sample_table(count, seed=3, drift=True)  # drifted: unseen regions, shifted means
    spec = make_spec("binary")
    rows: dict[str, np.ndarray] = {}
    for feature in spec.features:
        column = table.column(feature.name).to_pylist()
        if isinstance(feature, (VocabularyTransform, HashTransform)):
            rows[feature.name] = np.array([str(value) for value in column], dtype=object)
        else:
            rows[feature.name] = np.array(column, dtype=np.float32)
    rows["age"][:4] = [np.nan, np.inf, -1e30, 1e30]
    rows["loan_amount"][4:7] = [np.nan, -np.inf, 1e30]
    rows["employment"][:3] = ["", "astronaut", "RETIRED"]
    rows["purpose"][3:5] = ["", "ünïcødé"]
    return rows


@pytest.mark.parametrize("problem_type", ["binary", "multiclass", "regression"])
def test_keras_layers_match_the_plain_function(problem_type: str) -> None:
    spec = make_spec(problem_type)  # type: ignore[arg-type]
    rows = {
        name: values for name, values in _awkward_rows(300).items() if name in spec.feature_names
    }
    preprocessing = build_preprocessing_model(spec)

    from_layers = preprocessing({name: tf.constant(values) for name, values in rows.items()})
    from_function = transform_features(spec, rows)

    assert from_function.shape == (300, preprocessed_width(spec))
    assert np.all(np.isfinite(from_function))
    np.testing.assert_allclose(np.asarray(from_layers), from_function, rtol=1e-6, atol=1e-6)
