"""Fitting: input pipelines for this worker, callbacks, ``model.fit``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from cascade.core.hyperparameters import Hyperparameters
from cascade.core.observability import RunLogger
from cascade.trainer.callbacks import EpochLogger, TensorBoardScalars, UploadDirectory
from cascade.trainer.data import count_rows, make_dataset, steps_for
from cascade.trainer.model import CascadeModel
from cascade.trainer.storage import TrainerStorage, is_gcs_uri
from cascade.trainer.strategy import StrategyChoice
from cascade.transform.spec import TransformSpec

__all__ = [
    "FitPlan",
    "FitResult",
    "fit_arguments",
    "fit_model",
    "fit_result",
    "input_datasets",
    "training_callbacks",
]


@dataclass(frozen=True)
class FitPlan:
    """What to fit on and where its side outputs go."""

    train_files: list[Path]
    eval_files: list[Path]
    tensorboard_local_dir: Path
    tensorboard_uri: str | None
    checkpoint_dir: str | None


@dataclass(frozen=True)
class FitResult:
    epochs_trained: int
    steps: int
    history: dict[str, list[float]]


def input_datasets(
    plan: FitPlan, spec: TransformSpec, hparams: Hyperparameters, choice: StrategyChoice
) -> tuple[Any, Any, dict[str, Any]]:
    """Train and eval datasets for this worker, and the step counts ``fit`` needs."""
    global_batch = hparams.batch_size * choice.replicas
    label = spec.label.name
    train_rows, eval_rows = count_rows(plan.train_files, label), count_rows(plan.eval_files, label)
    distributed = choice.worker.count > 1
    train = make_dataset(
        plan.train_files,
        spec,
        batch_size=global_batch,
        shuffle_seed=hparams.seed,
        worker=choice.worker,
        repeat=distributed,
        rows=train_rows,
    )
    evaluation = make_dataset(
        plan.eval_files,
        spec,
        batch_size=global_batch,
        worker=choice.worker,
        repeat=distributed,
        rows=eval_rows,
    )
    steps: dict[str, Any] = {}
    if distributed:
        steps = {
            "steps_per_epoch": steps_for(train_rows, global_batch),
            "validation_steps": steps_for(eval_rows, global_batch),
        }
    return train, evaluation, steps


def training_callbacks(
    plan: FitPlan,
    hparams: Hyperparameters,
    storage: TrainerStorage,
    log: RunLogger,
    *,
    is_chief: bool,
    single_worker: bool,
    gcs_reachable_by_tensorflow: bool,
) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=hparams.early_stopping_patience, restore_best_weights=True
        ),
        TensorBoardScalars(plan.tensorboard_local_dir),
        EpochLogger(log),
    ]
    if is_chief and plan.tensorboard_uri:
        callbacks.append(UploadDirectory(storage, plan.tensorboard_local_dir, plan.tensorboard_uri))
    checkpoint = plan.checkpoint_dir
    if checkpoint and single_worker and (gcs_reachable_by_tensorflow or not is_gcs_uri(checkpoint)):
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir=checkpoint))
    return callbacks


def fit_arguments(
    plan: FitPlan,
    spec: TransformSpec,
    hparams: Hyperparameters,
    choice: StrategyChoice,
    *,
    storage: TrainerStorage,
    log: RunLogger,
    is_chief: bool,
    gcs_reachable_by_tensorflow: bool,
) -> tuple[Any, Any, dict[str, Any]]:
    """This worker's train and eval datasets and the rest of ``model.fit``'s arguments:
    epochs, callbacks, and the step counts of multi-worker training."""
    train, evaluation, steps = input_datasets(plan, spec, hparams, choice)
    callbacks = training_callbacks(
        plan,
        hparams,
        storage,
        log,
        is_chief=is_chief,
        single_worker=choice.worker.count == 1,
        gcs_reachable_by_tensorflow=gcs_reachable_by_tensorflow,
    )
    arguments = {
        "epochs": hparams.epochs,
        "callbacks": callbacks,
        "verbose": 0,
        "shuffle": False,
        **steps,
    }
    return train, evaluation, arguments


def fit_result(model: keras.Model, history: Any) -> FitResult:
    """What a finished ``fit`` did: epochs, optimizer steps, per-epoch metrics."""
    optimizer = getattr(model, "optimizer", None)
    steps = int(optimizer.iterations.numpy()) if optimizer is not None else 0
    records = getattr(history, "history", None) or {}
    return FitResult(
        epochs_trained=len(getattr(history, "epoch", None) or []),
        steps=steps,
        history={name: [float(value) for value in values] for name, values in records.items()},
    )


def fit_model(
    model: keras.Model,
    plan: FitPlan,
    spec: TransformSpec,
    hparams: Hyperparameters,
    choice: StrategyChoice,
    *,
    storage: TrainerStorage,
    log: RunLogger,
    is_chief: bool,
    gcs_reachable_by_tensorflow: bool,
) -> FitResult:
    train, evaluation, arguments = fit_arguments(
        plan,
        spec,
        hparams,
        choice,
        storage=storage,
        log=log,
        is_chief=is_chief,
        gcs_reachable_by_tensorflow=gcs_reachable_by_tensorflow,
    )
    if isinstance(model, CascadeModel):
        model.multi_worker_logs = choice.worker.count > 1
    history = model.fit(train, validation_data=evaluation, **arguments)
    return fit_result(model, history)
