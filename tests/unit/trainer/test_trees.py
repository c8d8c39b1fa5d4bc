"""The boosted-trees family: the compiled TensorFlow ensemble predicts what LightGBM's
booster predicts, on the inputs a serving client may send."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from cascade.core.hyperparameters import Hyperparameters
from cascade.core.observability import run_logger
from cascade.trainer.data import ShardReader
from cascade.trainer.export import export_serving_model
from cascade.trainer.trees import compile_booster, train_boosted_trees, tree_columns
from tests.unit.trainer.builders import ProblemType, make_spec, sample_table

HPARAMS = Hyperparameters(num_trees=60, num_leaves=15, min_examples=5, early_stopping_rounds=10)


def _shard(tmp_path: Path, rows: int, seed: int) -> Path:
    path = tmp_path / f"train-{seed}.parquet"
    pq.write_table(sample_table(rows, seed=seed), path)
    return path


def _hostile_rows(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Missing values, unseen categories, zeros, extremes and infinities, row by row."""
    hostile = {name: values.copy() for name, values in features.items()}
    for _name, values in hostile.items():
        if values.dtype == object:
            values[::5] = ""
            values[1::7] = "never-seen-before"
        else:
            values[::4] = np.nan
            values[1::9] = 0.0
            values[2::11] = np.float32(1e30)
            values[3::13] = -np.inf
    return hostile


@pytest.mark.parametrize("problem_type", ["binary", "multiclass", "regression"])
def test_the_compiled_ensemble_predicts_what_the_booster_predicts(
    tmp_path: Path, problem_type: ProblemType
) -> None:
    spec = make_spec(problem_type)
    result = train_boosted_trees(
        spec, HPARAMS, [_shard(tmp_path, 900, seed=3)], log=run_logger("test", run_id="t")
    )
    features = ShardReader(spec).read(_shard(tmp_path, 300, seed=11)).features
    for inputs in (features, _hostile_rows(features)):
        expected = result.booster.predict(tree_columns(spec, inputs))
        served = result.trained.model(
            {name: tf.constant(values) for name, values in inputs.items()}
        ).numpy()
        if problem_type != "multiclass":
            served = served.reshape(-1)
        np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-6)  # float32 out


def test_the_keras_tree_inputs_are_the_numpy_tree_columns(tmp_path: Path) -> None:
    spec = make_spec("binary")
    result = train_boosted_trees(
        spec, HPARAMS, [_shard(tmp_path, 400, seed=5)], log=run_logger("test", run_id="t")
    )
    features = _hostile_rows(ShardReader(spec).read(_shard(tmp_path, 200, seed=6)).features)
    keras_columns = result.trained.preprocessing(
        {name: tf.constant(values) for name, values in features.items()}
    )
    numpy_columns = tree_columns(spec, features)
    for index, column in enumerate(keras_columns):
        expected = numpy_columns[:, index]
        got = np.asarray(column.numpy(), dtype=np.float64).reshape(-1)
        clip = spec.features[index].clip if hasattr(spec.features[index], "clip") else None
        if clip is not None:  # the ensemble layer clips numeric columns itself
            got = np.where(np.isnan(got), got, np.clip(got, *clip))
        np.testing.assert_array_equal(got, expected)


def test_early_stopping_keeps_the_best_round_only(tmp_path: Path) -> None:
    spec = make_spec("binary")
    hparams = HPARAMS.model_copy(update={"num_trees": 400, "shrinkage": 0.5})
    result = train_boosted_trees(
        spec, hparams, [_shard(tmp_path, 900, seed=3)], log=run_logger("test", run_id="t")
    )
    best = result.booster.best_iteration
    assert 0 < best < 400
    assert result.fit.epochs_trained == best
    assert compile_booster(result.booster, outputs=1).trees == best
    assert len(result.fit.history["val_loss"]) == best


def test_the_trees_are_saved_once_as_variables_not_copied_into_the_graph(tmp_path: Path) -> None:
    spec = make_spec("binary")
    shard = _shard(tmp_path, 900, seed=3)
    sizes, rounds = {}, {}
    for trees in (5, 120):
        hparams = HPARAMS.model_copy(
            update={"num_trees": trees, "early_stopping_rounds": 1000, "shrinkage": 0.01}
        )
        result = train_boosted_trees(spec, hparams, [shard], log=run_logger("test", run_id="t"))
        rounds[trees] = result.fit.epochs_trained
        export = export_serving_model(result.trained.model, spec, tmp_path / f"export-{trees}")
        sizes[trees] = (
            (export / "saved_model.pb").stat().st_size,
            sum(f.stat().st_size for f in (export / "variables").iterdir()),
        )
    assert rounds[120] > 10 * rounds[5]
    graph_small, variables_small = sizes[5]
    graph_large, variables_large = sizes[120]
    assert variables_large > 5 * variables_small  # the trees are in the variables
    assert graph_large < 1.5 * graph_small  # the graph does not grow with them
