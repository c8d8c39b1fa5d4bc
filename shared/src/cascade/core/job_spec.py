"""What the train step submits and what job runners (Vertex AI, local) execute.

A ``TrainingJobSpec`` is written to ``runs/<run_id>/training/job_spec.json`` before
submission; the trainer reads it (``--job-spec-uri``), so the same object drives a
Vertex AI CustomJob / HyperparameterTuningJob and a local subprocess.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.core import vertex_job_env

__all__ = [
    "TERMINAL_STATES",
    "HyperparameterValue",
    "JobRunner",
    "JobState",
    "JobStatus",
    "LocalTaskJob",
    "ModelFamily",
    "ModelModule",
    "ParameterServerSpec",
    "ParameterSpec",
    "TrainingFailure",
    "TrainingJobSpec",
    "TuningSpec",
    "WorkerPool",
    "category_text",
    "study_problem",
]

HyperparameterValue = float | int | str | bool
ModelFamily = Literal["network", "boosted_trees", "auto", "custom"]
"""What the trainer builds (docs/trainer.md, "Model families"): ``network`` (Keras MLP),
``boosted_trees`` (gradient-boosted trees, compiled into the same serving SavedModel),
``auto`` (both; the better on the eval split is kept) or ``custom`` (the user's module)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerPool(_Strict):
    machine_type: str = "n1-standard-4"
    replica_count: int = Field(1, ge=1)
    accelerator_type: str | None = None
    accelerator_count: int = Field(0, ge=0)


class ParameterServerSpec(_Strict):
    """Model parallelism (``training.distribution: parameter_server``): the network's
    categorical features become embedding tables of ``embedding_dim`` columns, each split
    along its rows across the parameter servers into shards of at least
    ``min_shard_bytes`` (TensorFlow's ``MinSizePartitioner``; a smaller table stays whole)."""

    embedding_dim: int = Field(16, ge=1, le=1024)
    min_shard_bytes: int = Field(256 << 10, ge=1 << 10, le=1 << 34)


_DISCRETE_MAX_VALUES = 1000
_DISCRETE_MIN_GAP = 1e-10
_SCALES_NEEDING_POSITIVE = {"log": "UNIT_LOG_SCALE", "reverse_log": "UNIT_REVERSE_LOG_SCALE"}


def category_text(value: HyperparameterValue) -> str:
    """A categorical value as Vertex AI carries it (a string; booleans lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


class ParameterSpec(_Strict):
    """One tunable hyperparameter, in the terms of Vertex AI's StudySpec.

    Refused as Vertex AI refuses it (``StudySpec.ParameterSpec``): ``double`` and
    ``integer`` need ``min < max`` (whole numbers for ``integer``) and no ``values``;
    ``discrete`` needs numbers in increasing order, at least 1e-10 apart, at most 1,000;
    ``categorical`` needs distinct values and no scale; ``log`` and ``reverse_log``
    (UNIT_LOG_SCALE, UNIT_REVERSE_LOG_SCALE) need a strictly positive feasible space.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["double", "integer", "categorical", "discrete"]
    min: float | None = None
    max: float | None = None
    values: list[HyperparameterValue] = Field(default_factory=list)
    scale: Literal["linear", "log", "reverse_log"] | None = None

    @model_validator(mode="after")
    def _as_vertex_ai_accepts_it(self) -> ParameterSpec:
        problem = (
            self._range_problem() if self.type in ("double", "integer") else self._values_problem()
        )
        if problem:
            raise ValueError(f"tuning parameter {self.name!r} ({self.type}): {problem}")
        return self

    def _range_problem(self) -> str | None:
        if self.values:
            return "takes min and max, not values (use type discrete or categorical)"
        if self.min is None or self.max is None:
            return "needs min and max"
        if self.type == "integer" and not (self.min.is_integer() and self.max.is_integer()):
            return f"min {self.min:g} and max {self.max:g} must be whole numbers"
        if not self.min < self.max:
            return f"needs min < max, got min {self.min:g} and max {self.max:g}"
        if self.scale in _SCALES_NEEDING_POSITIVE and self.min <= 0:
            return (
                f"scale {self.scale} ({_SCALES_NEEDING_POSITIVE[self.scale]}) needs a strictly "
                f"positive range, got min {self.min:g}: raise min above 0 or use scale linear"
            )
        return None

    def _values_problem(self) -> str | None:
        if self.min is not None or self.max is not None:
            return "takes values, not min and max (use type double or integer)"
        if not self.values:
            return "needs values"
        if self.type == "categorical":
            if self.scale is not None:
                return "takes no scale (Vertex AI leaves categorical parameters unscaled)"
            texts = [category_text(value) for value in self.values]
            repeated = sorted({text for text in texts if texts.count(text) > 1})
            return f"values must be distinct, repeated: {', '.join(repeated)}" if repeated else None
        return self._discrete_problem()

    def _discrete_problem(self) -> str | None:
        numbers = [float(value) for value in self.values if _is_number(value)]
        if len(numbers) != len(self.values):
            return f"values must be numbers, got {self.values}"
        if len(numbers) > _DISCRETE_MAX_VALUES:
            return f"takes at most {_DISCRETE_MAX_VALUES} values, got {len(numbers)}"
        for before, after in itertools.pairwise(numbers):
            if not after - before >= _DISCRETE_MIN_GAP:
                return (
                    f"values must be in increasing order and at least {_DISCRETE_MIN_GAP:g} "
                    f"apart, got {before:g} then {after:g}"
                )
        if self.scale in _SCALES_NEEDING_POSITIVE and numbers[0] <= 0:
            return (
                f"scale {self.scale} ({_SCALES_NEEDING_POSITIVE[self.scale]}) needs strictly "
                f"positive values, got {numbers[0]:g}"
            )
        return None


def _is_number(value: HyperparameterValue) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TuningSpec(_Strict):
    """A Vertex AI StudySpec: parameter ids are unique, and GRID_SEARCH enumerates only
    ``integer``, ``categorical`` and ``discrete`` parameters."""

    metric: str = Field("eval_loss", min_length=1)
    goal: Literal["minimize", "maximize"] = "minimize"
    algorithm: Literal["grid", "random", "bayesian"] = "bayesian"
    max_trials: int = Field(8, ge=1)
    parallel_trials: int = Field(2, ge=1)
    parameters: list[ParameterSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _as_vertex_ai_accepts_it(self) -> TuningSpec:
        problem = study_problem(self.algorithm, self.parameters)
        if problem:
            raise ValueError(problem)
        return self


def study_problem(algorithm: str, parameters: list[ParameterSpec]) -> str | None:
    """Why Vertex AI would refuse a StudySpec of these parameters, or None."""
    names = [parameter.name for parameter in parameters]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"parameters: names must be unique, repeated: {', '.join(repeated)}"
    if algorithm == "grid":
        continuous = [parameter.name for parameter in parameters if parameter.type == "double"]
        if continuous:
            return (
                "algorithm grid (GRID_SEARCH) needs integer, discrete or categorical "
                f"parameters; {', '.join(continuous)} are double: give them `values` as "
                "discrete"
            )
    return None


class ModelModule(_Strict):
    """The user's model code for ``model: custom``, pinned when the run was submitted: the
    trainer reads exactly this generation and refuses bytes whose SHA-256 differs."""

    uri: str = Field(pattern=r"^gs://[^/]+/.+\.py$")
    generation: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class TrainingJobSpec(_Strict):
    run_id: str
    dataset: str
    display_name: str
    transform_spec_uri: str
    output_dir: str = Field(
        description="gs:// base (Vertex AI's base_output_directory): model/, checkpoints/, "
        "logs/ (TensorBoard), metrics.json; a tuning trial's under <output_dir>/<trial id>/."
    )
    model: ModelFamily = Field("network", description="The model family (training.model).")
    model_module: ModelModule | None = Field(
        None, description="The user's model code (model: custom), pinned by generation and hash."
    )
    hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)
    epochs: int = Field(100, ge=1, description="Most epochs (training.epochs).")
    batch_size: int = Field(256, ge=1, description="Examples per replica and step.")
    early_stopping_patience: int = Field(5, ge=1)
    slice_features: list[str] = Field(
        default_factory=list, description="Categorical features to report metrics per value."
    )
    baseline_model_uri: str | None = Field(
        None, description="The deployed model, evaluated on the same eval split."
    )
    chief: WorkerPool = WorkerPool()
    workers: WorkerPool | None = None
    parameter_servers: WorkerPool | None = Field(
        None, description="Worker pool 2 (TF_CONFIG task type ps): model parallelism."
    )
    sharding: ParameterServerSpec | None = Field(
        None, description="How the parameter-server network shards its embedding tables."
    )
    tuning: TuningSpec | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _module_for_custom(self) -> TrainingJobSpec:
        if (self.model == "custom") != (self.model_module is not None):
            raise ValueError("model_module is set exactly when model is custom")
        if (self.parameter_servers is None) != (self.sharding is None):
            raise ValueError("parameter_servers and sharding are set together")
        if self.parameter_servers is not None and (self.workers is None or self.model != "network"):
            raise ValueError(
                "parameter servers need model network and a worker pool (the chief coordinates, "
                "the workers compute the steps)"
            )
        return self

    @property
    def model_dir(self) -> str:
        """The job's ``AIP_MODEL_DIR`` (without the final slash)."""
        return vertex_job_env.model_uri(self.output_dir)

    @property
    def tensorboard_dir(self) -> str:
        """The job's ``AIP_TENSORBOARD_LOG_DIR`` (without the final slash)."""
        return vertex_job_env.tensorboard_log_uri(self.output_dir)

    @property
    def job_spec_uri(self) -> str:
        """Where the train step writes this spec; the trainer's ``--job-spec-uri``."""
        return f"{self.output_dir}/job_spec.json"

    @property
    def replica_count(self) -> int:
        """Processes per training run: the chief, every worker and every parameter server."""
        pools = (self.chief, self.workers, self.parameter_servers)
        return sum(pool.replica_count for pool in pools if pool is not None)


TRAINING_FAILURE_FILE = "failure.json"


class TrainingFailure(_Strict):
    """``<output_dir>/failure.json``: why the trainer failed, in its own words.

    Vertex AI reports a failed replica as a generic "exited with a non-zero status"; the
    trainer writes its one-line reason here (the module's error for ``model: custom``),
    and the training_job step records it on the run instead."""

    job: str | None = Field(None, description="The trainer's job name or id (args.job_name).")
    kind: Literal["permanent", "transient", "unexpected"]
    error: str
    trial_id: str | None = None


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


class LocalTaskJob(BaseModel):
    """A job of the local job service that one task process runs (a batch prediction
    job, a Beam job), as the service stores and returns it."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    name: str
    state: JobState = "queued"
    error: str = ""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None

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
