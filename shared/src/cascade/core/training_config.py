"""Pipeline-config sections for transform, training and tuning (``pipeline.yaml``).

transform:
  key_column: customer_id        # split by key (stable across files) and pass through
  eval_fraction: 0.2
  vocabulary_max_size: 1000      # larger string domains are hashed
  hash_buckets: 1024
  bucketize: {age: [25, 35, 50, 65]}
  exclude: [customer_id]
training:
  epochs: 10
  batch_size: 256
  hyperparameters: {learning_rate: 0.001, hidden_units: 64, dropout: 0.1}
  early_stopping_patience: 3
  workers: 1                     # >1: multi-worker data parallelism
  machine_type: n1-standard-4
  retrain_on: every_file         # every_file | value_skew (docs/validation.md, "Policy")
tuning:
  enabled: false
  metric: eval_loss
  goal: minimize
  algorithm: bayesian            # grid | random | bayesian (TPE locally)
  max_trials: 8
  parallel_trials: 2
  parameters:
    - {name: learning_rate, type: double, min: 0.0001, max: 0.1, scale: log}
    - {name: hidden_units, type: discrete, values: [32, 64, 128]}
    # Refused as Vertex AI refuses the StudySpec: min < max; log / reverse_log need
    # min > 0; discrete values increasing numbers; categorical values distinct.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.core.job_spec import HyperparameterValue, ParameterSpec, TuningSpec, study_problem

__all__ = ["RetrainOn", "TrainingConfig", "TransformConfig", "TuningConfig"]

RetrainOn = Literal["every_file", "value_skew"]
"""Which accepted files ask for training (docs/validation.md, "Policy"): ``every_file``
(each one); ``value_skew`` (only a file whose validation found value skews, and every
file while no model serves the dataset). Either way transform refits on all accepted
data."""


DEFAULT_HYPERPARAMETERS: dict[str, HyperparameterValue] = {
    "learning_rate": 0.001,
    "hidden_units": 64,
    "dropout": 0.1,
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformConfig(_Section):
    key_column: str | None = None
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    vocabulary_max_size: int = Field(1000, ge=1)
    num_oov_buckets: int = Field(1, ge=1)
    hash_buckets: int = Field(1024, ge=2)
    bucketize: dict[str, list[float]] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)


class TrainingConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    hyperparameters: dict[str, HyperparameterValue] = Field(
        default_factory=lambda: dict(DEFAULT_HYPERPARAMETERS)
    )
    early_stopping_patience: int = Field(3, ge=1)
    workers: int = Field(1, ge=1)
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = None
    accelerator_count: int = Field(0, ge=0)
    slice_features: list[str] = Field(
        default_factory=list, description="Categorical features to report metrics per value."
    )
    retrain_on: RetrainOn = Field(
        "every_file",
        description="every_file: each accepted file asks for training; value_skew: only a "
        "file with value skews does (and every file while no model serves the dataset).",
    )


class TuningConfig(_Section):
    """The search space, refused where Vertex AI would refuse its StudySpec (see
    ``ParameterSpec``): the error names the field, e.g. ``tuning.parameters.2``."""

    enabled: bool = False
    metric: str = "eval_loss"
    goal: str = Field("minimize", pattern="^(minimize|maximize)$")
    algorithm: str = Field("bayesian", pattern="^(grid|random|bayesian)$")
    max_trials: int = Field(8, ge=1)
    parallel_trials: int = Field(2, ge=1)
    parameters: list[ParameterSpec] = Field(
        default_factory=lambda: [
            ParameterSpec(name="learning_rate", type="double", min=1e-4, max=1e-1, scale="log"),
            ParameterSpec(name="hidden_units", type="discrete", values=[32, 64, 128]),
        ]
    )

    @model_validator(mode="after")
    def _as_vertex_ai_accepts_it(self) -> TuningConfig:
        problem = study_problem(self.algorithm, self.parameters)
        if problem:
            raise ValueError(problem)
        return self

    def study(self) -> TuningSpec:
        return TuningSpec.model_validate(
            {**self.model_dump(exclude={"enabled"}), "parameters": self.parameters}
        )
