"""Eval metrics of the candidate and of the deployed (baseline) model on the same split.

Both models are evaluated the way they serve: loaded as SavedModels and called through
their ``serving_default`` signature with raw feature values, so the numbers describe
what clients would get. Metrics are computed with NumPy, overall and for each value of
each slice feature, and written to ``<output_dir>/metrics.json`` (``EvaluationReport``).

Metric names: binary → ``loss`` (log loss), ``accuracy``, ``auc``, ``precision``,
``recall``; multiclass → ``loss`` (cross-entropy), ``accuracy``; regression → ``loss``
(= ``mse``), ``mse``, ``mae``, ``rmse``. A metric that is undefined on a slice (AUC with
one class present, precision without positive predictions) is left out, not faked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field

from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.trainer.data import LabelEncoder, numeric_column, string_column
from cascade.trainer.export import SIGNATURE_WITH_KEY
from cascade.transform.spec import LabelSpec, TransformSpec

__all__ = [
    "EvaluationReport",
    "MetricSet",
    "ModelMetrics",
    "ServingModel",
    "SliceMetrics",
    "compute_metrics",
    "evaluate_model",
    "load_eval_table",
]

MAX_SLICE_VALUES = 50
"""Most frequent values reported per slice feature (the rest are counted, not sliced)."""
_PROBABILITY_EPSILON = 1e-7
FloatArray = npt.NDArray[np.float64]


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

    def slice(self, feature: str, value: str) -> SliceMetrics | None:
        return next((s for s in self.slices if (s.feature, s.value) == (feature, value)), None)


class EvaluationReport(BaseModel):
    """``metrics.json``: the candidate's eval metrics and, when there is one, the baseline's."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    run_id: str
    problem_type: Literal["binary", "multiclass", "regression"]
    eval_examples: int
    slice_features: list[str]
    candidate: ModelMetrics
    baseline: ModelMetrics | None = None
    baseline_error: str | None = Field(
        None, description="Why the baseline could not be evaluated (the run still succeeds)."
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    epochs_trained: int = 0
    trial_id: str | None = None
    created_at: datetime

    def metric(self, name: str) -> float:
        """A candidate metric by name; ``eval_loss`` and ``loss`` are the same metric."""
        metrics = self.candidate.overall.metrics
        for candidate in (name, name.removeprefix("eval_")):
            if candidate in metrics:
                return metrics[candidate]
        raise InvalidConfigError(
            f"metric {name!r} is not computed for {self.problem_type}; "
            f"available: {', '.join(sorted(metrics))} (optionally prefixed eval_)"
        )


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


# Models and data ------------------------------------------------------------------------


@dataclass
class ServingModel:
    """A loaded SavedModel's signature, kept together with the object that owns it."""

    uri: str
    loaded: Any
    signature: Callable[..., dict[str, tf.Tensor]]

    @classmethod
    def load(cls, local_dir: Path, uri: str, signature: str = SIGNATURE_WITH_KEY) -> ServingModel:
        loaded = tf.saved_model.load(str(local_dir))
        if signature not in loaded.signatures:
            raise BadInputError(
                f"no {signature!r} signature (has {list(loaded.signatures)})", uri=uri
            )
        return cls(uri=uri, loaded=loaded, signature=loaded.signatures[signature])

    @property
    def input_specs(self) -> dict[str, tf.TensorSpec]:
        return dict(self.signature.structured_input_signature[1])  # type: ignore[attr-defined]

    @property
    def output_names(self) -> set[str]:
        return set(self.signature.structured_outputs)  # type: ignore[attr-defined]

    def predict(
        self, inputs: Mapping[str, npt.NDArray[Any]], batch_size: int = 4096
    ) -> dict[str, npt.NDArray[Any]]:
        rows = len(next(iter(inputs.values())))
        parts: dict[str, list[npt.NDArray[Any]]] = {}
        for start in range(0, rows, batch_size):
            batch = {
                name: tf.constant(
                    values[start : start + batch_size], dtype=self.input_specs[name].dtype
                )
                for name, values in inputs.items()
            }
            for name, value in self.signature(**batch).items():
                parts.setdefault(name, []).append(value.numpy())
        return {name: np.concatenate(values) for name, values in parts.items()}

    def inputs_from(self, table: pa.Table) -> dict[str, npt.NDArray[Any]]:
        """Signature inputs from eval columns; a passthrough key absent from the data is ``""``."""
        inputs: dict[str, npt.NDArray[Any]] = {}
        for name, spec in self.input_specs.items():
            if name in table.column_names:
                read = numeric_column if spec.dtype.is_floating else string_column
                inputs[name] = read(table, name)
            elif spec.dtype == tf.string and name in self.output_names:
                inputs[name] = np.full(table.num_rows, "", dtype=object)
            else:
                raise BadInputError(f"the model needs input {name!r}, absent from the eval data")
        return inputs


def load_eval_table(files: Sequence[Path], label: LabelSpec) -> pa.Table:
    """The eval shards as one table, rows without a label dropped."""
    if not files:
        raise BadInputError("no eval shards")
    table = pa.concat_tables([pq.read_table(path) for path in files], promote_options="permissive")
    if label.name not in table.column_names:
        raise BadInputError(f"the eval data has no label column {label.name!r}")
    return table.filter(pc.is_valid(table.column(label.name)))


def _slices(
    table: pa.Table, slice_features: Sequence[str]
) -> list[tuple[str, str, npt.NDArray[np.bool_]]]:
    slices = []
    for feature in slice_features:
        values = string_column(table, feature)
        for value, _ in Counter(values.tolist()).most_common(MAX_SLICE_VALUES):
            slices.append((feature, str(value), values == value))
    return slices


def evaluate_model(
    model: ServingModel,
    table: pa.Table,
    spec: TransformSpec,
    slice_features: Sequence[str],
) -> ModelMetrics:
    """The model's metrics on ``table``, overall and per value of each slice feature."""
    targets = LabelEncoder(spec.label).encode(table.column(spec.label.name))
    outputs = model.predict(model.inputs_from(table))
    problem = spec.label.problem_type
    overall = MetricSet(examples=len(targets), metrics=compute_metrics(problem, targets, outputs))
    slices = [
        SliceMetrics(
            feature=feature,
            value=value,
            examples=int(mask.sum()),
            metrics=compute_metrics(
                problem, targets[mask], {k: v[mask] for k, v in outputs.items()}
            ),
        )
        for feature, value, mask in _slices(table, slice_features)
    ]
    return ModelMetrics(model_uri=model.uri, overall=overall, slices=slices)
