"""Trained runs of one dataset for the Experiments page, written where the steps and the
trainer write them: ``run.json`` (and the run index) by ``ConsoleUnderTest.add_run``;
the train step's ``training/job_spec.json`` (``TrainingJobSpec``); the transform's
``transform/transform.json`` (``models_builders.transform_spec``); the trainer's
``metrics.json`` and ``history.json`` (the trainer's own models: ``ModelMetrics`` and
``training_history``) in the training folder or, after tuning, in each trial's folder;
the evaluate step's ``evaluation.json`` naming the evaluated ``metrics.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cascade.core.job_spec import TrainingJobSpec, TuningSpec
from cascade.core.runs import RunRecord
from cascade.evaluation.record import evaluation_path
from cascade.jobs.records import job_spec_name, training_folder
from cascade.report.training_section import TrainerMetrics
from cascade.trainer.history import HISTORY_FILE, training_history
from cascade.trainer.metrics import MetricSet, ModelMetrics, SliceMetrics
from cascade.transform.catalog import transform_spec_name
from tests.console.builders import ConsoleUnderTest, step
from tests.console.models_builders import evaluation, transform_spec

DATASET = "credit"
BUCKET = "gs://cascade-artifacts"


@dataclass
class TrainedRun:
    """What one run trained: its hyperparameters, data, metrics and per-epoch history."""

    number: int
    hyperparameters: dict[str, Any]
    files: list[str]
    overall: dict[str, float]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{"city=a": {"auc": 0.8}}``."""
    history: dict[str, list[float]] = field(default_factory=dict)
    tuning_trials: int = 0
    """0: a single training job; else a tuning job of this many trials, trial 2 the best."""
    model: str = "network"
    dataset: str = DATASET


def _metrics(run: RunRecord, trained: TrainedRun, folder: str, trial: str | None) -> bytes:
    candidate = ModelMetrics(
        model_uri=f"{BUCKET}/{folder}/model",
        overall=MetricSet(examples=200, metrics=trained.overall),
        slices=[
            SliceMetrics(
                feature=name.partition("=")[0],
                value=name.partition("=")[2],
                examples=100,
                metrics=values,
            )
            for name, values in trained.slices.items()
        ],
    )
    report = {
        "dataset": run.dataset,
        "run_id": run.run_id,
        "problem_type": "binary",
        "eval_examples": 200,
        "slice_features": sorted({name.partition("=")[0] for name in trained.slices}),
        "candidate": candidate.model_dump(mode="json"),
        "model_family": trained.model,
        "hyperparameters": trained.hyperparameters,
        "epochs_trained": max((len(v) for v in trained.history.values()), default=0),
        "trial_id": trial,
        "created_at": (run.created_at + timedelta(minutes=2)).isoformat(),
    }
    return TrainerMetrics.model_validate(report).model_dump_json().encode()


def _job_spec(run: RunRecord, trained: TrainedRun) -> TrainingJobSpec:
    tuning = None
    if trained.tuning_trials:
        tuning = TuningSpec.model_validate(
            {
                "metric": "eval_loss",
                "max_trials": trained.tuning_trials,
                "parallel_trials": 1,
                "parameters": [
                    {"name": "learning_rate", "type": "double", "min": 1e-4, "max": 0.1}
                ],
            }
        )
    return TrainingJobSpec(
        run_id=run.run_id,
        dataset=run.dataset,
        display_name=f"cascade-train-{run.run_id}",
        transform_spec_uri=f"{BUCKET}/{transform_spec_name(run.run_id)}",
        output_dir=f"{BUCKET}/{training_folder(run.run_id)}",
        model=trained.model,
        hyperparameters={} if tuning else dict(trained.hyperparameters),
        epochs=20,
        tuning=tuning,
    )


def add_trained_run(console: ConsoleUnderTest, trained: TrainedRun) -> RunRecord:
    """A run that transformed, trained (or tuned) and was evaluated."""
    outputs: dict[str, Any] = {"job_name": "projects/p/locations/l/customJobs/1"}
    best = "2" if trained.tuning_trials else None
    if best is not None:
        outputs.update(best_trial=best, best_metric=trained.overall["loss"])
    train = step("succeeded", 60, 120).model_copy(update={"outputs": outputs})
    run = console.add_run(trained.dataset, trained.number, steps={"train": train})
    artifacts = console.artifacts
    artifacts.write_json(transform_spec_name(run.run_id), transform_spec(run, trained.files))
    artifacts.write_json(job_spec_name(run.run_id), _job_spec(run, trained))
    folder = training_folder(run.run_id)
    if best is not None:
        for trial in range(1, trained.tuning_trials + 1):
            if trial != 3:  # trial 3 failed: no metrics.json
                trial_folder = f"{folder}/{trial}"
                data = _metrics(run, trained, trial_folder, str(trial))
                artifacts.write(f"{trial_folder}/metrics.json", data)
        folder = f"{folder}/{best}"
    else:
        artifacts.write(f"{folder}/metrics.json", _metrics(run, trained, folder, None))
    history = training_history(run.run_id, trained.history, trial_id=best)
    artifacts.write_json(f"{folder}/{HISTORY_FILE}", history)
    record = evaluation(run).model_copy(
        update={
            "metrics_uri": f"{BUCKET}/{folder}/metrics.json",
            "model_uri": f"{BUCKET}/{folder}/model",
        }
    )
    artifacts.write_json(evaluation_path(run.run_id), record)
    return run


def first_model(**changes: Any) -> TrainedRun:
    values: dict[str, Any] = {
        "number": 1,
        "hyperparameters": {"learning_rate": 0.01, "hidden_units": 64, "dropout": 0.1},
        "files": ["credit/day-1.csv", "credit/day-2.csv"],
        "overall": {"loss": 0.45, "auc": 0.81},
        "slices": {"city=a": {"loss": 0.44, "auc": 0.82}, "city=b": {"loss": 0.47, "auc": 0.79}},
        "history": {
            "loss": [0.69, 0.52, 0.45],
            "val_loss": [0.66, 0.50, 0.46],
            "auc": [0.61, 0.74, 0.80],
            "val_auc": [0.63, 0.76, 0.81],
        },
    }
    values.update(changes)
    return TrainedRun(**values)


def second_model(**changes: Any) -> TrainedRun:
    """Another learning rate, one more file, a new city slice, two more epochs."""
    values: dict[str, Any] = {
        "number": 2,
        "hyperparameters": {"learning_rate": 0.003, "hidden_units": 64, "dropout": 0.1},
        "files": ["credit/day-1.csv", "credit/day-2.csv", "credit/day-3.csv"],
        "overall": {"loss": 0.41, "auc": 0.84},
        "slices": {"city=a": {"loss": 0.40, "auc": 0.85}, "city=z": {"loss": 0.52, "auc": 0.71}},
        "history": {
            "loss": [0.70, 0.55, 0.47, 0.43, 0.41],
            "val_loss": [0.67, 0.52, 0.45, 0.42, 0.41],
            "auc": [0.60, 0.72, 0.79, 0.82, 0.84],
            "val_auc": [0.62, 0.75, 0.80, 0.83, 0.84],
        },
    }
    values.update(changes)
    return TrainedRun(**values)
