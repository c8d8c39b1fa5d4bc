"""Continued evaluation: the model serving a dataset, scored on each labelled file.

Every file accepted into a dataset that carries the label is scored by the model that
serves the dataset at that moment, before the file joins training
(``cascade.steps.monitor``). The metrics are the evaluation's own
(``cascade.trainer.metrics``: the same functions, the same slices as the trainer's
``metrics.json``, NumPy only), kept as one point of a time series per dataset,
``datasets/<dataset>/monitoring/<run_id>.json`` (``MonitoringPoint``).

Decay is judged on one metric (``evaluation.monitoring`` of the pipeline config) against
a reference: the serving model's own value in its evaluation (the candidate's overall
value in its run's ``metrics.json``), else the first point this version scored. A drop
beyond ``max_drop`` alerts and asks for training, even when no feature drifted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cascade.core.errors import BadInputError, BadRequestError
from cascade.core.evaluation_config import MonitoringConfig
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.store import ArtifactStore
from cascade.evaluation.inputs import TrainedMetrics
from cascade.trainer.metrics import ModelMetrics, class_names, model_metrics
from cascade.transform.spec import LabelSpec

__all__ = [
    "DecayCheck",
    "MonitoringPoint",
    "MonitoringStatus",
    "decay_check",
    "encode_labels",
    "outputs_of",
    "read_series",
    "reference_value",
    "score_predictions",
    "write_point",
]

MonitoringStatus = Literal["scored", "no_labels", "no_model", "not_scored", "failed"]
_TOLERANCE = 1e-12


class DecayCheck(BaseModel):
    """The served model's value on the file against its reference, and the verdict."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    value: float | None
    reference: float | None
    reference_source: str = Field(description="evaluation (metrics.json) or first monitored")
    drop: float | None = None
    allowed: float | None = None
    judged: bool
    decayed: bool
    detail: str


class MonitoringPoint(BaseModel):
    """One file scored (or not) by the model serving its dataset at the time."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    run_id: str
    file_uri: str
    status: MonitoringStatus
    detail: str = ""
    model_version: str | None = None
    model_uri: str | None = None
    model_run_id: str | None = None
    rows_read: int = 0
    rows_labelled: int = 0
    rows_scored: int = 0
    sampled_every: int = Field(1, description="Every k-th row was scored (the max_rows cap).")
    rows_by_other_versions: int = Field(
        0, description="Rows the endpoint answered with another version (a canary): dropped."
    )
    metrics: ModelMetrics | None = None
    decay: DecayCheck | None = None
    at: datetime

    def value(self, metric: str) -> float | None:
        return None if self.metrics is None else self.metrics.overall.metrics.get(metric)


def write_point(artifacts: ArtifactStore, point: MonitoringPoint) -> str:
    name = DatasetPaths(point.dataset).monitoring_point(point.run_id)
    artifacts.write_json(name, point)
    return artifacts.uri(name)


def read_series(
    artifacts: ArtifactStore, dataset: str, *, last: int | None = None
) -> list[MonitoringPoint]:
    """The dataset's monitoring points, oldest first (the ``last`` few when given);
    unreadable points are left out."""
    points = []
    for name in artifacts.list_names(DatasetPaths(dataset).monitoring_prefix):
        found = _read_point(artifacts, name)
        if found is not None:
            points.append(found)
    points.sort(key=lambda point: (point.at, point.run_id))
    return points if last is None else points[-last:]


def _read_point(artifacts: ArtifactStore, name: str) -> MonitoringPoint | None:
    try:
        found = artifacts.read_model(name, MonitoringPoint)
    except (ValueError, BadInputError):
        return None
    return None if found is None else found[0]


# Labels and predictions ----------------------------------------------------------------


def encode_labels(
    label: LabelSpec, values: Sequence[str], rows: Sequence[int], uri: str
) -> npt.NDArray[np.generic]:
    """Label values (as read from the file, text) as the trainer's targets: class
    indices, or floats for regression. A value that is not a class, or not a number for
    regression, is bad input naming its row and column."""
    location = f"column {label.name!r}"
    if label.problem_type == "regression":
        targets = np.empty(len(values), dtype=np.float64)
        for index, (value, row) in enumerate(zip(values, rows, strict=True)):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise BadInputError(
                    f"row {row}: label {value[:80]!r} is not a finite number",
                    uri=uri,
                    location=location,
                )
            targets[index] = number
        return targets
    classes = class_names(label)
    index_of = {name: position for position, name in enumerate(classes)}
    targets_int = np.empty(len(values), dtype=np.int32)
    for index, (value, row) in enumerate(zip(values, rows, strict=True)):
        position = index_of.get(value)
        if position is None:
            raise BadInputError(
                f"row {row}: label {value[:80]!r} is not one of the classes {classes}",
                uri=uri,
                location=location,
            )
        targets_int[index] = position
    return targets_int


def outputs_of(predictions: Sequence[Any], problem_type: str) -> dict[str, npt.NDArray[Any]]:
    """The served model's answers (one object per row) as the output arrays the metrics
    take: ``probabilities`` (classification) or ``predictions`` (regression)."""
    name = "predictions" if problem_type == "regression" else "probabilities"
    values = []
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, dict) or name not in prediction:
            raise BadRequestError(f"prediction {index} has no {name!r} output: {prediction!r}")
        values.append(prediction[name])
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BadRequestError(f"the served model's {name!r} are not numbers: {error}") from None
    return {name: array}


def score_predictions(
    model_uri: str,
    label: LabelSpec,
    targets: npt.NDArray[np.generic],
    predictions: Sequence[Any],
    slice_columns: dict[str, npt.NDArray[np.object_]],
) -> ModelMetrics:
    """The evaluation's metrics (overall and per slice) of the served model's answers."""
    outputs = outputs_of(predictions, label.problem_type)
    return model_metrics(model_uri, label.problem_type, targets, outputs, slice_columns)


# Decay ---------------------------------------------------------------------------------


def reference_value(
    artifacts: ArtifactStore,
    config: MonitoringConfig,
    *,
    model_run_id: str,
    model_version: str,
    earlier: Iterable[MonitoringPoint],
) -> tuple[float | None, str]:
    """The serving model's own value of the metric: its evaluation (the candidate's
    overall value in its run's metrics.json), else the first point it scored."""
    metric = config.metric_name
    name = f"{RunPaths(model_run_id).step_dir('training')}/metrics.json"
    try:
        found = artifacts.read_model(name, TrainedMetrics)
    except (ValueError, BadInputError):
        found = None
    if found is not None and metric in found[0].candidate.overall.metrics:
        return found[0].candidate.overall.metrics[metric], f"evaluation ({artifacts.uri(name)})"
    for point in earlier:
        value = point.value(metric)
        if point.model_version == model_version and value is not None:
            return value, f"first monitored file ({point.run_id})"
    return None, "none: no evaluation value and no earlier monitored file"


def decay_check(
    config: MonitoringConfig,
    metrics: ModelMetrics,
    reference: float | None,
    reference_source: str,
) -> DecayCheck:
    metric = config.metric_name
    value = metrics.overall.metrics.get(metric)
    rows = metrics.overall.examples

    def unjudged(detail: str) -> DecayCheck:
        return DecayCheck(
            metric=metric,
            value=value,
            reference=reference,
            reference_source=reference_source,
            judged=False,
            decayed=False,
            detail=detail,
        )

    if value is None:
        available = ", ".join(sorted(metrics.overall.metrics)) or "none"
        return unjudged(f"{metric} is undefined on this file (available: {available})")
    if rows < config.min_rows:
        return unjudged(f"{rows} rows scored < min_rows {config.min_rows}: not judged")
    if reference is None:
        return unjudged(f"{metric} = {value:.6g}; no reference yet ({reference_source})")
    drop = (reference - value) if config.improves_upward else (value - reference)
    allowed = config.max_drop * (abs(reference) if config.relative else 1.0)
    decayed = drop > allowed + _TOLERANCE
    kind = "relative" if config.relative else "absolute"
    detail = (
        f"{metric} {reference:.6g} -> {value:.6g} on {rows} rows: drop {drop:.6g} "
        f"{'>' if decayed else '<='} {allowed:.6g} allowed (max_drop {config.max_drop:g} "
        f"{kind}; reference: {reference_source})"
    )
    return DecayCheck(
        metric=metric,
        value=value,
        reference=reference,
        reference_source=reference_source,
        drop=drop,
        allowed=allowed,
        judged=True,
        decayed=decayed,
        detail=detail,
    )
