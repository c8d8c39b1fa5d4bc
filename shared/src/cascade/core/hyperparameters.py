"""The hyperparameters of one run or tuning trial, validated with clear errors.

One model for every family; each family reads its own names (``FAMILY_PARAMETERS``) and
the shared ``seed``. The names do not overlap, so ``model: auto`` can pass one set to
both families: the network's ``learning_rate`` (Adam) is not the trees' ``shrinkage``.

Resolved in order, later wins: these defaults, the job spec's ``epochs`` / ``batch_size``
/ ``early_stopping_patience``, ``job_spec.hyperparameters``, then ``--name=value`` flags
(how Vertex AI passes a trial's parameters). An unknown name is an error: a tuning study
that searches a parameter the trainer ignores would silently waste its trials. The
defaults are the ones ``docs/trainer.md`` justifies with ``bench/model_quality.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cascade.core.errors import InvalidConfigError, describe_validation_error
from cascade.core.job_spec import HyperparameterValue, ModelFamily, TrainingJobSpec

__all__ = [
    "FAMILY_PARAMETERS",
    "Hyperparameters",
    "family_hyperparameters",
    "family_problem",
    "own_hyperparameters",
    "resolve_hyperparameters",
]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # network (and custom models that Cascade compiles and fits)
    learning_rate: float = Field(0.001, gt=0, le=10, description="Adam learning rate.")
    hidden_units: int = Field(64, ge=1, le=65536, description="Units per hidden layer.")
    hidden_layers: int = Field(2, ge=1, le=16, description="Hidden layers of the MLP.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after each hidden layer.")
    batch_size: int = Field(256, ge=1, description="Examples per replica and step.")
    epochs: int = Field(100, ge=1, description="Most epochs; early stopping decides sooner.")
    early_stopping_patience: int = Field(5, ge=1, description="Epochs without eval-loss gain.")
    # boosted_trees
    num_trees: int = Field(2000, ge=1, le=100000, description="Most boosting rounds.")
    shrinkage: float = Field(0.1, gt=0, le=1, description="Learning rate of boosting.")
    num_leaves: int = Field(31, ge=2, le=131072, description="Most leaves per tree.")
    max_depth: int = Field(-1, ge=-1, le=64, description="Most depth per tree; -1: no limit.")
    min_examples: int = Field(20, ge=1, description="Fewest training rows in a leaf.")
    subsample: float = Field(1.0, gt=0, le=1, description="Rows sampled per round.")
    feature_fraction: float = Field(1.0, gt=0, le=1, description="Features sampled per tree.")
    l2_regularization: float = Field(0.0, ge=0, description="L2 penalty on leaf values.")
    max_bins: int = Field(255, ge=2, le=65535, description="Histogram bins per numeric feature.")
    early_stopping_rounds: int = Field(
        20, ge=1, description="Rounds without loss gain on the trees' holdout."
    )
    # every family
    seed: int = Field(42, description="Seeds initialisation, sampling and shuffling.")


_NETWORK = frozenset(
    {
        "learning_rate",
        "hidden_units",
        "hidden_layers",
        "dropout",
        "batch_size",
        "epochs",
        "early_stopping_patience",
        "seed",
    }
)
_TREES = frozenset(
    {
        "num_trees",
        "shrinkage",
        "num_leaves",
        "max_depth",
        "min_examples",
        "subsample",
        "feature_fraction",
        "l2_regularization",
        "max_bins",
        "early_stopping_rounds",
        "seed",
    }
)
FAMILY_PARAMETERS: dict[ModelFamily, frozenset[str]] = {
    "network": _NETWORK,
    "boosted_trees": _TREES,
    "auto": _NETWORK | _TREES,
    "custom": _NETWORK,
}
"""The names each family reads. A custom module may declare more (docs/trainer.md)."""


def family_hyperparameters(
    hparams: Hyperparameters, family: ModelFamily
) -> dict[str, HyperparameterValue]:
    """The values ``family`` reads (what a run's record shows)."""
    return {
        name: value
        for name, value in hparams.model_dump().items()
        if name in FAMILY_PARAMETERS[family]
    }


def family_problem(family: ModelFamily, names: set[str] | list[str]) -> str | None:
    """Why ``names`` cannot be given to ``family`` (a name it does not read), or None.
    Custom modules declare their own names, checked when the trainer loads the module."""
    if family == "custom":
        return None
    unknown = sorted(set(names) - FAMILY_PARAMETERS[family])
    if not unknown:
        return None
    return (
        f"model {family} does not read {', '.join(unknown)}; "
        f"it reads {', '.join(sorted(FAMILY_PARAMETERS[family]))}"
    )


def resolve_hyperparameters(
    job_spec: TrainingJobSpec,
    overrides: Mapping[str, HyperparameterValue],
    *,
    extra: frozenset[str] = frozenset(),
) -> Hyperparameters:
    """The run's hyperparameters; ``extra`` names (a custom module's own, read with
    ``own_hyperparameters``) are left out."""
    given = {**job_spec.hyperparameters, **overrides}
    problem = family_problem(job_spec.model, [name for name in given if name not in extra])
    if problem:
        raise InvalidConfigError(f"invalid hyperparameters: {problem}")
    undeclared = sorted(set(given) - set(Hyperparameters.model_fields) - extra)
    if job_spec.model == "custom" and undeclared:
        raise InvalidConfigError(
            f"invalid hyperparameters: {', '.join(undeclared)} are not Cascade's and the "
            "model module does not declare them in its HYPERPARAMETERS"
        )
    values: dict[str, HyperparameterValue] = {
        "epochs": job_spec.epochs,
        "batch_size": job_spec.batch_size,
        "early_stopping_patience": job_spec.early_stopping_patience,
        **given,
    }
    try:
        common = {name: value for name, value in values.items() if name not in extra}
        return Hyperparameters.model_validate(common)
    except ValidationError as error:
        problems = describe_validation_error(error)
        known = ", ".join(sorted(FAMILY_PARAMETERS[job_spec.model] | extra))
        raise InvalidConfigError(
            f"invalid hyperparameters ({problems}); known names: {known}"
        ) from None


def own_hyperparameters(
    job_spec: TrainingJobSpec,
    overrides: Mapping[str, HyperparameterValue],
    defaults: Mapping[str, HyperparameterValue],
) -> dict[str, HyperparameterValue]:
    """A custom module's own hyperparameters: its ``defaults``, then the job spec's and the
    flags' values of those names."""
    given = {**job_spec.hyperparameters, **overrides}
    return {name: given.get(name, value) for name, value in defaults.items()}
