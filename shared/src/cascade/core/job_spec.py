"""What the train step submits and what job runners (Vertex AI, local) execute.

A ``TrainingJobSpec`` is written to ``runs/<run_id>/training/job_spec.json`` before
submission; the trainer reads it (``--job-spec-uri``), so the same object drives a
Vertex AI CustomJob / HyperparameterTuningJob and a local subprocess.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "TERMINAL_STATES",
    "HyperparameterValue",
    "JobRunner",
    "JobState",
    "JobStatus",
    "ParameterSpec",
    "TrainingJobSpec",
    "TuningSpec",
    "WorkerPool",
]

HyperparameterValue = float | int | str | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerPool(_Strict):
    machine_type: str = "n1-standard-4"
    replica_count: int = Field(1, ge=1)
    accelerator_type: str | None = None
    accelerator_count: int = Field(0, ge=0)


class ParameterSpec(_Strict):
    """One tunable hyperparameter, in the terms of Vertex AI's StudySpec."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["double", "integer", "categorical", "discrete"]
    min: float | None = None
    max: float | None = None
    values: list[HyperparameterValue] = Field(default_factory=list)
    scale: Literal["linear", "log", "reverse_log"] | None = None

    @model_validator(mode="after")
    def _bounds_or_values(self) -> ParameterSpec:
        if self.type in ("double", "integer"):
            if self.min is None or self.max is None or self.min >= self.max:
                raise ValueError(f"{self.name}: {self.type} needs min < max")
        elif not self.values:
            raise ValueError(f"{self.name}: {self.type} needs values")
        return self


class TuningSpec(_Strict):
    metric: str = "eval_loss"
    goal: Literal["minimize", "maximize"] = "minimize"
    algorithm: Literal["grid", "random", "bayesian"] = "bayesian"
    max_trials: int = Field(8, ge=1)
    parallel_trials: int = Field(2, ge=1)
    parameters: list[ParameterSpec] = Field(min_length=1)


class TrainingJobSpec(_Strict):
    run_id: str
    dataset: str
    display_name: str
    transform_spec_uri: str
    output_dir: str = Field(description="gs:// base: model/, metrics.json, tensorboard/.")
    hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1, description="Most epochs (training.epochs).")
    batch_size: int = Field(256, ge=1, description="Examples per replica and step.")
    early_stopping_patience: int = Field(3, ge=1)
    slice_features: list[str] = Field(
        default_factory=list, description="Categorical features to report metrics per value."
    )
    baseline_model_uri: str | None = Field(
        None, description="The deployed model, evaluated on the same eval split."
    )
    chief: WorkerPool = WorkerPool()
    workers: WorkerPool | None = None
    tuning: TuningSpec | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def model_dir(self) -> str:
        return f"{self.output_dir}/model"

    @property
    def tensorboard_dir(self) -> str:
        return f"{self.output_dir}/tensorboard"

    @property
    def job_spec_uri(self) -> str:
        """Where the train step writes this spec; the trainer's ``--job-spec-uri``."""
        return f"{self.output_dir}/job_spec.json"

    @property
    def replica_count(self) -> int:
        """Processes per training run: the chief plus every worker."""
        return self.chief.replica_count + (self.workers.replica_count if self.workers else 0)


JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobStatus(_Strict):
    name: str
    state: JobState
    error: str = ""
    model_dir: str | None = None
    best_hyperparameters: dict[str, HyperparameterValue] | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    best_trial_id: str | None = None
    best_metric: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class JobRunner(Protocol):
    """Submits and follows training jobs; Vertex AI and local implementations."""

    def submit(self, spec: TrainingJobSpec, *, request_id: str) -> str:
        """Start the job and return its name; the same request id never starts two."""
        ...

    def get(self, name: str) -> JobStatus: ...

    def cancel(self, name: str) -> None: ...

    @property
    def publishes_tuning_result(self) -> bool:
        """True when the runner itself publishes ``model-trained`` for a tuning job's best
        trial (the local runner); False when ``handle_job_event`` must (Vertex AI)."""
        ...
