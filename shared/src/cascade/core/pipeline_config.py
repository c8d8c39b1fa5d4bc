"""The per-dataset pipeline config: ``datasets/<dataset>/pipeline.yaml`` in the artifacts bucket.

One YAML document validated by a typed model; every section has defaults, so a dataset
without the file runs with them. Unknown keys are refused (a typo must not silently
fall back to a default), and errors name the offending field. Sections for training,
evaluation and deployment are added here as those steps arrive.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascade.core.bigquery_source import BigQuerySource
from cascade.core.deployment_config import DeploymentConfig
from cascade.core.errors import InvalidConfigError, describe_validation_error
from cascade.core.evaluation_config import EvaluationConfig
from cascade.core.hyperparameters import family_problem
from cascade.core.job_spec import study_problem
from cascade.core.paths import DatasetPaths
from cascade.core.serving_config import ServingConfig
from cascade.core.store import ArtifactStore
from cascade.core.training_config import TrainingConfig, TransformConfig, TuningConfig
from cascade.core.validation_config import ValidationConfig

__all__ = [
    "PipelineConfig",
    "ProblemType",
    "load_pipeline_config",
    "parse_pipeline_config",
    "push_pipeline_config",
]

ProblemType = Literal["binary", "multiclass", "regression"]


class PipelineConfig(BaseModel):
    """What to learn from a dataset, and how each step judges it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str | None = Field(None, min_length=1, description="The column to predict.")
    problem_type: ProblemType | None = Field(
        None, description="binary, multiclass or regression; required once training runs."
    )
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    bigquery_source: BigQuerySource | None = Field(
        None,
        description="A BigQuery table or query extracted incrementally into the landing "
        "bucket by the extract function (cascade.core.bigquery_source).",
    )

    @model_validator(mode="after")
    def _tuning_fits_the_model(self) -> PipelineConfig:
        family = self.training.model
        if family == "auto" and (self.tuning.enabled or self.tuning.parameters is not None):
            raise ValueError(
                "tuning: model auto cannot be tuned; tune network or boosted_trees and "
                "compare the two with model auto"
            )
        if family == "auto":
            return self
        space = self.tuning.search_space(family)
        problem = family_problem(family, [parameter.name for parameter in space])
        if problem:
            raise ValueError(f"tuning.parameters: {problem}")
        problem = study_problem(self.tuning.algorithm, space)
        if problem:
            raise ValueError(f"tuning: {problem}")
        return self


def parse_pipeline_config(text: str | bytes, *, where: str) -> PipelineConfig:
    """Parse YAML text; InvalidConfigError names the file and each bad field."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidConfigError(f"{where}: not valid YAML: {error}") from error
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidConfigError(f"{where}: the document must be a mapping of sections")
    try:
        return PipelineConfig.model_validate(document)
    except ValidationError as error:
        raise InvalidConfigError(
            f"{where}: {describe_validation_error(error, root='<document>')}"
        ) from error


def load_pipeline_config(artifacts: ArtifactStore, dataset: str) -> PipelineConfig:
    """The dataset's config, or the defaults when it has no ``pipeline.yaml``."""
    name = DatasetPaths(dataset).pipeline_config
    stored = artifacts.read(name)
    if stored is None:
        return PipelineConfig()
    return parse_pipeline_config(stored.data, where=artifacts.uri(name))


def push_pipeline_config(artifacts: ArtifactStore, dataset: str, text: bytes, *, where: str) -> str:
    """Validate ``text`` and store it as the dataset's config; returns its URI."""
    parse_pipeline_config(text, where=where)
    name = DatasetPaths(dataset).pipeline_config
    artifacts.write(name, text, content_type="application/yaml")
    return artifacts.uri(name)
