"""Model metrics from serving outputs and targets, overall and per slice, without TensorFlow.

The trainer's evaluation (``cascade.trainer.scoring``, which loads SavedModels with
TensorFlow) and the continued evaluation of the served model
(``cascade.evaluation.monitoring``, which runs in a Cloud Function where TensorFlow is not
installed) compute the same metrics on the same slices with these functions.

Metric names: binary → ``loss`` (log loss), ``accuracy``, ``auc``, ``precision``,
``recall``; multiclass → ``loss`` (cross-entropy), ``accuracy``; regression → ``loss``
(= ``mse``), ``mse``, ``mae``, ``rmse``. A metric that is undefined on a slice (AUC with
one class present, precision without positive predictions) is left out, not faked.

Beside the slices by feature value, ``newest_files`` holds the metrics on the rows of the
transform's newest files (``cascade.transform.newest``), when the eval data marks them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.transform.spec import LabelSpec

__all__ = [
    "MAX_SLICE_VALUES",
    "MetricSet",
    "ModelMetrics",
    "SliceMetrics",
    "class_names",
    "compute_metrics",
    "model_metrics",
    "slice_masks",
]

MAX_SLICE_VALUES = 50
"""Most frequent values reported per slice feature (the rest are counted, not sliced)."""
_PROBABILITY_EPSILON = 1e-7
FloatArray = npt.NDArray[np.float64]


def class_names(label: LabelSpec) -> list[str]:
    """Class names in index order; a binary label without names is ``["0", "1"]``."""
    if label.problem_type == "regression":
        return []
    if label.classes:
        return list(label.classes)
    if label.problem_type == "binary":
        return ["0", "1"]
    raise InvalidConfigError(f"multiclass label {label.name!r} has no classes in the spec")


class MetricSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: int
    metrics: dict[str, float]


class SliceMetrics(MetricSet):
    feature: str
    value: str


class ModelMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_uri: str
    overall: MetricSet
    slices: list[SliceMetrics] = Field(default_factory=list)
    newest_files: MetricSet | None = Field(
        None, description="On the rows of the newest accepted files (the newest_files slice)."
    )

    def slice(self, feature: str, value: str) -> SliceMetrics | None:
        return next((s for s in self.slices if (s.feature, s.value) == (feature, value)), None)


# Metrics --------------------------------------------------------------------------------


def _auc(targets: FloatArray, scores: FloatArray) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula, ties counted as half."""
    positives = int(targets.sum())
    negatives = targets.shape[0] - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.shape[0], dtype=np.float64)
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average_ranks = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(average_ranks, counts)
    rank_sum = ranks[targets == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _binary_metrics(targets: FloatArray, positive: FloatArray) -> dict[str, float | None]:
    clipped = np.clip(positive, _PROBABILITY_EPSILON, 1 - _PROBABILITY_EPSILON)
    loss = -np.mean(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped))
    predicted = positive >= 0.5
    true_positives = float(np.sum(predicted & (targets == 1)))
    predicted_positives = float(np.sum(predicted))
    actual_positives = float(np.sum(targets == 1))
    return {
        "loss": float(loss),
        "accuracy": float(np.mean(predicted == (targets == 1))),
        "auc": _auc(targets, positive),
        "precision": true_positives / predicted_positives if predicted_positives else None,
        "recall": true_positives / actual_positives if actual_positives else None,
    }


def _multiclass_metrics(targets: FloatArray, probabilities: FloatArray) -> dict[str, float | None]:
    indices = targets.astype(np.int64)
    chosen = probabilities[np.arange(indices.shape[0]), indices]
    return {
        "loss": float(-np.mean(np.log(np.clip(chosen, _PROBABILITY_EPSILON, 1.0)))),
        "accuracy": float(np.mean(np.argmax(probabilities, axis=1) == indices)),
    }


def _regression_metrics(targets: FloatArray, predictions: FloatArray) -> dict[str, float | None]:
    errors = predictions - targets
    mse = float(np.mean(errors**2))
    return {"loss": mse, "mse": mse, "mae": float(np.mean(np.abs(errors))), "rmse": mse**0.5}


def compute_metrics(
    problem_type: str, targets: npt.ArrayLike, outputs: Mapping[str, npt.ArrayLike]
) -> dict[str, float]:
    """Metrics from serving outputs (``probabilities`` or ``predictions``) and targets."""
    target_values = np.asarray(targets, dtype=np.float64)
    if target_values.shape[0] == 0:
        return {}
    if problem_type == "regression":
        values = _regression_metrics(target_values, _output(outputs, "predictions").reshape(-1))
    elif problem_type == "binary":
        values = _binary_metrics(target_values, _output(outputs, "probabilities")[:, -1])
    else:
        values = _multiclass_metrics(target_values, _output(outputs, "probabilities"))
    return {name: value for name, value in values.items() if value is not None}


def _output(outputs: Mapping[str, npt.ArrayLike], name: str) -> FloatArray:
    if name not in outputs:
        raise BadInputError(f"the model has no {name!r} output (it has {sorted(outputs)})")
    return np.asarray(outputs[name], dtype=np.float64)


# Slices ---------------------------------------------------------------------------------


def slice_masks(
    columns: Mapping[str, npt.NDArray[np.object_]],
) -> list[tuple[str, str, npt.NDArray[np.bool_]]]:
    """(feature, value, rows) for the most frequent values of each slice feature's column
    (values as strings, missing as ``""``)."""
    slices = []
    for feature, values in columns.items():
        for value, _ in Counter(values.tolist()).most_common(MAX_SLICE_VALUES):
            slices.append((feature, str(value), values == value))
    return slices


def model_metrics(
    model_uri: str,
    problem_type: str,
    targets: npt.ArrayLike,
    outputs: Mapping[str, npt.ArrayLike],
    slice_columns: Mapping[str, npt.NDArray[np.object_]],
    newest_rows: npt.NDArray[np.bool_] | None = None,
) -> ModelMetrics:
    """The metrics of a model's ``outputs`` against ``targets``, overall, per slice and,
    with ``newest_rows`` (true for the rows of the newest files), on those rows."""
    target_values = np.asarray(targets)
    output_values = {name: np.asarray(values) for name, values in outputs.items()}

    def on(rows: npt.NDArray[np.bool_]) -> MetricSet:
        return MetricSet(
            examples=int(rows.sum()),
            metrics=compute_metrics(
                problem_type,
                target_values[rows],
                {name: values[rows] for name, values in output_values.items()},
            ),
        )

    overall = MetricSet(
        examples=int(target_values.shape[0]),
        metrics=compute_metrics(problem_type, target_values, output_values),
    )
    slices = [
        SliceMetrics(feature=feature, value=value, **on(mask).model_dump())
        for feature, value, mask in slice_masks(slice_columns)
    ]
    newest = None if newest_rows is None else on(np.asarray(newest_rows, dtype=np.bool_))
    return ModelMetrics(model_uri=model_uri, overall=overall, slices=slices, newest_files=newest)
