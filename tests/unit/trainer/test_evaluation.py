"""Eval metrics computed from serving outputs: known values, undefined metrics left out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.trainer.metrics import model_metrics
from cascade.trainer.scoring import (
    EvaluationReport,
    MetricSet,
    ModelMetrics,
    compute_metrics,
    newest_rows,
)


def _probabilities(positive: list[float]) -> dict[str, np.ndarray]:
    p = np.array(positive)
    return {"probabilities": np.stack([1 - p, p], axis=1)}


def test_binary_metrics_match_hand_computed_values() -> None:
    targets = [0, 0, 1, 1]
    positive = [0.1, 0.6, 0.35, 0.8]

    metrics = compute_metrics("binary", targets, _probabilities(positive))

    # positives (0.35, 0.8) outrank negatives (0.1, 0.6) in 3 of 4 pairs
    assert metrics["auc"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["precision"] == pytest.approx(0.5)  # predicted 0.6 and 0.8, one right
    assert metrics["recall"] == pytest.approx(0.5)
    expected_loss = -np.mean(np.log([0.9, 0.4, 0.35, 0.8]))
    assert metrics["loss"] == pytest.approx(expected_loss)


def test_auc_counts_ties_as_half() -> None:
    metrics = compute_metrics("binary", [0, 1, 0, 1], _probabilities([0.5, 0.5, 0.2, 0.9]))

    assert metrics["auc"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)


def test_undefined_metrics_are_left_out() -> None:
    metrics = compute_metrics("binary", [1, 1], _probabilities([0.2, 0.3]))

    assert "auc" not in metrics
    assert "precision" not in metrics
    assert metrics["recall"] == 0.0
    assert compute_metrics("binary", [], _probabilities([])) == {}


def test_multiclass_and_regression_metrics() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])

    multiclass = compute_metrics("multiclass", [0, 2, 1], {"probabilities": probabilities})
    regression = compute_metrics(
        "regression", [1.0, 2.0, 4.0], {"predictions": np.array([1.0, 3.0, 2.0])}
    )

    assert multiclass["accuracy"] == pytest.approx(2 / 3)
    assert multiclass["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.4])))
    assert regression == pytest.approx(
        {"loss": 5 / 3, "mse": 5 / 3, "mae": 1.0, "rmse": (5 / 3) ** 0.5}
    )


def test_a_model_without_the_expected_output_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="predictions"):
        compute_metrics("regression", [1.0], {"probabilities": np.array([[0.5, 0.5]])})


def test_report_metric_accepts_eval_prefix_and_names_what_exists() -> None:
    report = EvaluationReport.model_validate(
        {
            "dataset": "credit",
            "run_id": "r",
            "problem_type": "binary",
            "eval_examples": 2,
            "slice_features": [],
            "created_at": "2026-11-27T00:00:00Z",
            "candidate": ModelMetrics(
                model_uri="gs://b/m",
                overall=MetricSet(examples=2, metrics={"loss": 0.3, "auc": 0.8}),
            ),
        }
    )

    assert report.metric("eval_loss") == report.metric("loss") == 0.3
    assert report.metric("eval_auc") == 0.8
    with pytest.raises(InvalidConfigError, match="available: auc, loss"):
        report.metric("eval_rmse")


def test_the_newest_files_slice_is_scored_on_the_marked_rows_only() -> None:
    targets = np.array([0, 1, 0, 1, 1, 0])
    outputs = _probabilities([0.1, 0.9, 0.2, 0.3, 0.6, 0.7])
    newest = np.array([False, False, False, True, True, True])
    regions = np.array(["n", "n", "s", "s", "s", "n"], dtype=object)

    metrics = model_metrics(
        "gs://b/m", "binary", targets, outputs, {"region": regions}, newest_rows=newest
    )

    assert metrics.newest_files is not None
    assert metrics.newest_files.examples == 3
    expected = compute_metrics("binary", targets[3:], _probabilities([0.3, 0.6, 0.7]))
    assert metrics.newest_files.metrics == pytest.approx(expected)
    assert metrics.overall.examples == 6
    assert {(s.feature, s.value, s.examples) for s in metrics.slices} == {
        ("region", "n", 3),
        ("region", "s", 3),
    }


def test_without_a_marker_there_is_no_newest_files_slice() -> None:
    metrics = model_metrics("gs://b/m", "binary", [0, 1], _probabilities([0.2, 0.8]), {})

    assert metrics.newest_files is None


def test_the_newest_rows_come_from_the_column_the_spec_names() -> None:
    from tests.unit.trainer.builders import NEWEST_COLUMN, NEWEST_FILE, make_spec

    table = pa.table({NEWEST_COLUMN: pa.array([True, None, False, True], pa.bool_())})
    marked = make_spec(newest_files=[NEWEST_FILE], newest_column=NEWEST_COLUMN)

    assert newest_rows(table, marked) is not None
    assert newest_rows(table, marked).tolist() == [True, False, False, True]  # type: ignore[union-attr]
    assert newest_rows(table, make_spec()) is None
