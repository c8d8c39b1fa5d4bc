"""The training section: the job, and loss and metrics per epoch.

Read from ``runs/<run_id>/training/``: ``job_spec.json`` (what was asked: epochs, batch
size, tuning) and, in the directory of the run's ``metrics.json`` (a trial's directory
after tuning, as ``evaluation.json`` records), ``history.json`` (the per-epoch logs the
trainer writes) and ``metrics.json`` itself (hyperparameters and epochs trained). The
TensorBoard logs are that directory's ``logs/`` (``AIP_TENSORBOARD_LOG_DIR``).
"""

from __future__ import annotations

import posixpath
from typing import Any

from pydantic import Field

from cascade.core import vertex_job_env
from cascade.core.job_spec import TrainingJobSpec
from cascade.core.runs import RunRecord
from cascade.core.store import ArtifactStore
from cascade.evaluation.inputs import TrainedMetrics
from cascade.evaluation.record import EvaluationRecord
from cascade.jobs.records import job_spec_name, training_folder
from cascade.report.charts import line_chart
from cascade.report.page_model import Fact, MetricCurve, TrainingSection
from cascade.report.reading import object_name, read_json
from cascade.trainer.history import HISTORY_FILE, TrainingHistory

__all__ = ["TRAIN_STEPS", "TrainerMetrics", "metrics_name", "training_section"]

TRAIN_STEPS = ("train", "training_job")
_VALIDATION_PREFIX = "val_"


class TrainerMetrics(TrainedMetrics):
    """``metrics.json`` with the trainer's fields that evaluation does not need."""

    model_family: str | None = None
    model_selection: dict[str, dict[str, float]] = Field(default_factory=dict)
    model_module: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    epochs_trained: int = 0
    trial_id: str | None = None


def _model_facts(metrics: TrainerMetrics) -> list[Fact]:
    """Which family trained the model, with ``auto`` each family's eval loss, and the
    user's module (custom)."""
    facts = []
    if metrics.model_family:
        facts.append(Fact(label="model family", value=metrics.model_family))
    for family, values in sorted(metrics.model_selection.items()):
        kept = " (kept)" if family == metrics.model_family else ""
        loss = values.get("loss", float("nan"))
        facts.append(Fact(label=f"auto: {family} eval loss", value=f"{loss:.6g}{kept}"))
    if metrics.model_module:
        facts.append(Fact(label="model module", value=metrics.model_module))
    return facts


def metrics_name(artifacts: ArtifactStore, run_id: str, evaluation: EvaluationRecord | None) -> str:
    """Where the run's ``metrics.json`` is: as evaluated, else the training folder's."""
    if evaluation is not None:
        name = object_name(artifacts, evaluation.metrics_uri)
        if name is not None:
            return name
    return f"{training_folder(run_id)}/metrics.json"


def _curves(history: TrainingHistory) -> list[MetricCurve]:
    bases = sorted(
        {name.removeprefix(_VALIDATION_PREFIX) for name in history.metrics},
        key=lambda name: (name != "loss", name),
    )
    curves = []
    for base in bases:
        train = history.metrics.get(base)
        validation = history.metrics.get(f"{_VALIDATION_PREFIX}{base}")
        series = [(f"train {base}", train)] if train is not None else []
        if validation is not None:
            series.append((f"eval {base}", validation))
        chart = line_chart(series, description=f"{base} per epoch", x_label="epoch")
        if chart is None:
            continue
        curves.append(
            MetricCurve(
                metric=base,
                final_train=train[-1] if train else None,
                final_validation=validation[-1] if validation else None,
                chart=chart,
            )
        )
    return curves


def _not_trained(record: RunRecord) -> str:
    validate = record.validation
    if validate is not None and validate.state == "rejected":
        return "Training did not run: the data was rejected at validation."
    transform = record.transformation
    not_requested = transform.outputs.get("train_request") if transform is not None else None
    if transform is not None and transform.state == "succeeded" and not_requested:
        return f"Training did not run: {not_requested}."
    for name, step in reversed(record.steps.items()):
        if step.state in ("failed", "rejected"):
            return f"Training did not run: the {name} step {step.state} ({step.error or ''})."
    if record.state == "running":
        return "Training has not started yet: the run is still in progress."
    return "Training did not run in this run."


def _job_facts(record: RunRecord, spec: TrainingJobSpec | None) -> list[Fact]:
    found: dict[str, str] = {}
    for step_name in TRAIN_STEPS:
        outputs = record.steps[step_name].outputs if step_name in record.steps else {}
        for key in ("job_name", "kind", "job_state", "best_trial", "best_metric"):
            if outputs.get(key) not in (None, ""):
                found[key.replace("_", " ")] = str(outputs[key])
    facts = [Fact(label=label, value=value) for label, value in found.items()]
    if spec is not None:
        facts.append(Fact(label="batch size", value=str(spec.batch_size)))
        facts.append(Fact(label="replicas", value=str(spec.replica_count)))
        if spec.tuning is not None:
            tuning = spec.tuning
            value = f"{tuning.algorithm}, {tuning.max_trials} trials, {tuning.goal} {tuning.metric}"
            facts.append(Fact(label="tuning", value=value))
    return facts


def training_section(
    artifacts: ArtifactStore, record: RunRecord, evaluation: EvaluationRecord | None
) -> TrainingSection:
    coalesced = record.steps.get("train")
    if coalesced is not None and coalesced.outputs.get("coalesced_into"):
        into = coalesced.outputs["coalesced_into"]
        return TrainingSection(
            missing=f"This request was coalesced into follow-up run {into}, which trains the model."
        )
    spec = read_json(artifacts, job_spec_name(record.run_id), TrainingJobSpec).value
    metrics_at = metrics_name(artifacts, record.run_id, evaluation)
    metrics = read_json(artifacts, metrics_at, TrainerMetrics).value
    if spec is None and metrics is None and not any(step in record.steps for step in TRAIN_STEPS):
        return TrainingSection(missing=_not_trained(record))
    folder = posixpath.dirname(metrics_at)
    logs_uri = artifacts.uri(vertex_job_env.tensorboard_log_dir(folder))
    history = read_json(artifacts, f"{folder}/{HISTORY_FILE}", TrainingHistory)
    section = TrainingSection(
        job=_job_facts(record, spec),
        epochs_planned=spec.epochs if spec is not None else None,
        artifacts=[
            Fact(label="metrics", value=artifacts.uri(metrics_at)),
            Fact(label="history", value=artifacts.uri(f"{folder}/{HISTORY_FILE}")),
            Fact(label="TensorBoard logs", value=logs_uri),
        ],
    )
    if metrics is not None:
        section.epochs_trained = metrics.epochs_trained or None
        section.job.extend(_model_facts(metrics))
        section.job.extend(
            Fact(label=f"hyperparameter {name}", value=str(value))
            for name, value in sorted(metrics.hyperparameters.items())
        )
    if history.value is None:
        section.history_note = (
            f"No per-epoch history: {history.problem}. The trainer's TensorBoard scalars "
            f"are under {logs_uri}."
        )
        return section
    section.epochs_trained = history.value.epochs
    section.curves = _curves(history.value)
    return section
