"""Pipeline-config sections for transform, training and tuning (``pipeline.yaml``).

transform:
  key_column: customer_id        # split by key (stable across files) and pass through
  eval_fraction: 0.2
  vocabulary_max_size: 1000      # larger string domains are hashed
  hash_buckets: 1024
  bucketize: {age: [25, 35, 50, 65]}
  exclude: [customer_id]
  beam: {above_rows: 50000000, always: false}  # the split as a Beam job (docs/beam.md)
  handover_within_s: 600         # bursts: a later transform covering a run's files does its
                                 # work, while the latest transform is younger than this
training:
  model: boosted_trees           # network | boosted_trees | auto | custom (docs/trainer.md)
  model_module: models/churn.py  # model: custom — datasets/<dataset>/models/churn.py
  epochs: 100                    # network: most epochs; early stopping decides
  batch_size: 256
  hyperparameters: {shrinkage: 0.05, num_leaves: 31}   # the family's names only
  early_stopping_patience: 5
  workers: 1                     # processes computing steps: >1 multi-worker data
                                 # parallelism (network, custom); with parameter servers,
                                 # the worker pool beside the coordinating chief
  distribution: auto             # auto | data_parallel | parameter_server (docs/trainer.md)
  parameter_servers: 2           # parameter_server: the tasks holding the table shards
  embedding_dim: 16              # parameter_server: columns of each embedding table
  min_shard_bytes: 262144        # parameter_server: smallest shard of a split table
  parameter_server_above_bytes: 268435456  # auto: a larger table switches to it
  machine_type: n1-standard-4
  retrain_on: every_file         # every_file | value_skew (docs/validation.md, "Policy")
tuning:
  enabled: false
  metric: eval_loss
  goal: minimize
  algorithm: bayesian            # grid | random | bayesian (TPE locally)
  max_trials: 8
  parallel_trials: 2
  parameters:                    # default: the model family's own search space
    - {name: shrinkage, type: double, min: 0.01, max: 0.3, scale: log}
    - {name: num_leaves, type: discrete, values: [15, 31, 63, 127]}
    # Refused as Vertex AI refuses the StudySpec: min < max; log / reverse_log need
    # min > 0; discrete values increasing numbers; categorical values distinct.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from cascade.core.hyperparameters import family_problem
from cascade.core.job_spec import (
    HyperparameterValue,
    ModelFamily,
    ParameterSpec,
    TuningSpec,
    study_problem,
)

__all__ = [
    "DEFAULT_SEARCH_SPACES",
    "Distribution",
    "RetrainOn",
    "TrainingConfig",
    "TransformBeamRouting",
    "TransformConfig",
    "TuningConfig",
]

RetrainOn = Literal["every_file", "value_skew"]
"""Which accepted files ask for training (docs/validation.md, "Policy"): ``every_file``
(each one); ``value_skew`` (only a file whose validation found value skews, and every
file while no model serves the dataset). Either way transform refits on all accepted
data."""


Distribution = Literal["auto", "data_parallel", "parameter_server"]
"""How a network trains on several machines (docs/trainer.md, "Parameter servers"):
``data_parallel`` (every worker holds the whole model), ``parameter_server`` (embedding
tables sharded across parameter servers) or ``auto`` (parameter servers when the largest
embedding table would exceed ``parameter_server_above_bytes``)."""

MAX_WORKERS = 1000
MAX_PARAMETER_SERVERS = 100

_MODULE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*(/[A-Za-z0-9_][A-Za-z0-9_-]*)*\.py$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformBeamRouting(_Section):
    """When the transform's train/eval split is materialised by an Apache Beam job
    instead of in the function (docs/beam.md, "The transform's materialisation"):
    ``always``, or a snapshot of more than ``above_rows`` rows (never when it is null,
    the default).

    Strict types: ``always: "yes"`` or ``above_rows: true`` are refused, not read as
    ``True`` or ``1``.
    """

    above_rows: StrictInt | None = Field(
        None,
        gt=0,
        le=1 << 62,
        description="Snapshots of more rows than this are split by Beam; null: none.",
    )
    always: StrictBool = Field(False, description="Every run's split is written by Beam.")

    def routes(self, rows: int) -> bool:
        """Whether a snapshot of ``rows`` rows is split by a Beam job."""
        return self.always or (self.above_rows is not None and rows > self.above_rows)


class TransformConfig(_Section):
    key_column: str | None = None
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    vocabulary_max_size: int = Field(1000, ge=1)
    num_oov_buckets: int = Field(1, ge=1)
    hash_buckets: int = Field(1024, ge=2)
    bucketize: dict[str, list[float]] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)
    beam: TransformBeamRouting = Field(default_factory=TransformBeamRouting)
    handover_within_s: StrictInt = Field(
        600,
        ge=0,
        le=86_400,
        description="A run's transform is handed over to a later one that covers its files "
        "(a burst of files) only while the dataset's latest transform is younger than this; "
        "0: every run transforms its own snapshot (cascade.transform.coalesce).",
    )


class TrainingConfig(_Section):
    model: ModelFamily = Field(
        "boosted_trees",
        description="network | boosted_trees | auto (both; the better on the eval split) | "
        "custom (model_module).",
    )
    model_module: str | None = Field(
        None,
        description="model: custom — the module's object name under datasets/<dataset>/ "
        "in the artifacts bucket, e.g. models/churn.py.",
    )
    epochs: int = Field(100, ge=1, description="network: most epochs; early stopping decides.")
    batch_size: int = Field(256, ge=1)
    hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)
    early_stopping_patience: int = Field(5, ge=1)
    workers: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
        description="Processes that compute training steps: the chief and its workers "
        "(data parallel), or the workers beside a coordinating chief (parameter servers).",
    )
    distribution: Distribution = Field(
        "auto",
        description="data_parallel | parameter_server | auto (parameter servers when an "
        "embedding table exceeds parameter_server_above_bytes; model network only).",
    )
    parameter_servers: int = Field(
        2, ge=1, le=MAX_PARAMETER_SERVERS, description="Parameter-server tasks (worker pool 2)."
    )
    embedding_dim: int = Field(
        16, ge=1, le=1024, description="parameter_server: columns of each embedding table."
    )
    min_shard_bytes: int = Field(
        256 << 10,
        ge=1 << 10,
        le=1 << 34,
        description="parameter_server: a table is split into shards of at least this size.",
    )
    parameter_server_above_bytes: int = Field(
        256 << 20,
        ge=1 << 10,
        le=1 << 50,
        description="distribution auto: an embedding table larger than this (rows x "
        "embedding_dim x 4 bytes) trains with parameter servers.",
    )
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

    @field_validator("model_module")
    @classmethod
    def _object_name(cls, value: str | None) -> str | None:
        if value is not None and not _MODULE_NAME.fullmatch(value):
            raise ValueError(
                "must be a relative object name of letters, digits, _ and - in / separated "
                f"parts ending in .py, e.g. models/churn.py; got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _family_fits(self) -> TrainingConfig:
        if (self.model == "custom") != (self.model_module is not None):
            raise ValueError("model_module is required by model: custom, and only by it")
        if self.workers > 1 and self.model in ("boosted_trees", "auto"):
            raise ValueError(
                f"workers: {self.workers} needs model network or custom; boosted trees "
                "train on one machine (give it more cores with machine_type)"
            )
        if self.distribution == "parameter_server" and self.model != "network":
            raise ValueError(
                f"distribution parameter_server needs model network, not {self.model}: "
                "its embedding tables are what the parameter servers hold"
            )
        problem = family_problem(self.model, list(self.hyperparameters))
        if problem:
            raise ValueError(f"hyperparameters: {problem}")
        return self

    def table_bytes(self, rows: int) -> int:
        """The size of an embedding table of ``rows`` rows: rows x embedding_dim x 4 bytes."""
        return rows * self.embedding_dim * 4

    def uses_parameter_servers(self, table_rows: Mapping[str, int]) -> bool:
        """Whether this config trains with parameter servers, given the rows of each
        categorical feature's table (``auto``: the largest table decides)."""
        if self.distribution != "auto":
            return self.distribution == "parameter_server"
        if self.model != "network" or not table_rows:
            return False
        return self.table_bytes(max(table_rows.values())) > self.parameter_server_above_bytes


DEFAULT_SEARCH_SPACES: dict[ModelFamily, list[ParameterSpec]] = {
    "network": [
        ParameterSpec(name="learning_rate", type="double", min=1e-4, max=1e-1, scale="log"),
        ParameterSpec(name="hidden_units", type="discrete", values=[32, 64, 128, 256]),
        ParameterSpec(name="dropout", type="double", min=0.0, max=0.5, scale="linear"),
    ],
    "boosted_trees": [
        ParameterSpec(name="shrinkage", type="double", min=0.01, max=0.3, scale="log"),
        ParameterSpec(name="num_leaves", type="discrete", values=[15, 31, 63, 127]),
        ParameterSpec(name="min_examples", type="discrete", values=[5, 20, 50, 100]),
    ],
    "custom": [
        ParameterSpec(name="learning_rate", type="double", min=1e-4, max=1e-1, scale="log"),
    ],
}
"""Each family's search space when ``tuning.parameters`` is not given (docs/trainer.md)."""


class TuningConfig(_Section):
    """The search space, refused where Vertex AI would refuse its StudySpec (see
    ``ParameterSpec``): the error names the field, e.g. ``tuning.parameters.2``."""

    enabled: bool = False
    metric: str = "eval_loss"
    goal: str = Field("minimize", pattern="^(minimize|maximize)$")
    algorithm: str = Field("bayesian", pattern="^(grid|random|bayesian)$")
    max_trials: int = Field(8, ge=1)
    parallel_trials: int = Field(2, ge=1)
    parameters: list[ParameterSpec] | None = Field(
        None, description="The search space; default: the model family's (DEFAULT_SEARCH_SPACES)."
    )

    @model_validator(mode="after")
    def _as_vertex_ai_accepts_it(self) -> TuningConfig:
        problem = study_problem(self.algorithm, self.parameters or [])
        if problem:
            raise ValueError(problem)
        return self

    def search_space(self, family: ModelFamily) -> list[ParameterSpec]:
        """The parameters a study of ``family`` searches."""
        if family == "auto":
            raise ValueError("model auto cannot be tuned: tune network or boosted_trees")
        if self.parameters is not None:
            return list(self.parameters)
        return list(DEFAULT_SEARCH_SPACES[family])

    def study(self, family: ModelFamily) -> TuningSpec:
        return TuningSpec.model_validate(
            {**self.model_dump(exclude={"enabled"}), "parameters": self.search_space(family)}
        )
