"""The hyperparameters of one run or tuning trial, validated with clear errors.

Resolved in order, later wins: these defaults, the job spec's ``epochs`` / ``batch_size``
/ ``early_stopping_patience``, ``job_spec.hyperparameters``, then ``--name=value`` flags
(how Vertex AI passes a trial's parameters). An unknown name is an error: a tuning study
that searches a parameter the trainer ignores would silently waste its trials.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cascade.core.errors import InvalidConfigError, describe_validation_error
from cascade.core.job_spec import HyperparameterValue, TrainingJobSpec

__all__ = ["Hyperparameters", "resolve_hyperparameters"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(0.001, gt=0, le=10, description="Adam learning rate.")
    hidden_units: int = Field(64, ge=1, le=65536, description="Units per hidden layer.")
    hidden_layers: int = Field(2, ge=1, le=16, description="Hidden layers of the MLP.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after each hidden layer.")
    batch_size: int = Field(256, ge=1, description="Examples per replica and step.")
    epochs: int = Field(10, ge=1, description="Most epochs; early stopping may end sooner.")
    early_stopping_patience: int = Field(3, ge=1, description="Epochs without eval-loss gain.")
    seed: int = Field(42, description="Seeds weight initialisation and shuffling.")


def resolve_hyperparameters(
    job_spec: TrainingJobSpec, overrides: Mapping[str, HyperparameterValue]
) -> Hyperparameters:
    values: dict[str, HyperparameterValue] = {
        "epochs": job_spec.epochs,
        "batch_size": job_spec.batch_size,
        "early_stopping_patience": job_spec.early_stopping_patience,
        **job_spec.hyperparameters,
        **overrides,
    }
    try:
        return Hyperparameters.model_validate(values)
    except ValidationError as error:
        problems = describe_validation_error(error)
        known = ", ".join(Hyperparameters.model_fields)
        raise InvalidConfigError(
            f"invalid hyperparameters ({problems}); known names: {known}"
        ) from None
