"""``history.json``: a training run's per-epoch logs, written beside ``metrics.json``.

The trainer (chief) writes what Keras's ``History`` recorded: ``loss`` and the compiled
metrics on the train split, ``val_``-prefixed on the eval split, one value per epoch
trained. This module imports no TensorFlow, so readers (the run report) stay light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HISTORY_FILE", "TrainingHistory", "training_history"]

HISTORY_FILE = "history.json"


class TrainingHistory(BaseModel):
    """Per-epoch values by Keras metric name; None where a value was NaN or infinite."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    trial_id: str | None = None
    epochs: int = Field(ge=0, description="Epochs trained (early stopping may end sooner).")
    metrics: dict[str, list[float | None]] = Field(default_factory=dict)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def training_history(
    run_id: str, history: Mapping[str, Sequence[float]], *, trial_id: str | None = None
) -> TrainingHistory:
    """The history of one run from Keras's ``History.history`` (name → values per epoch)."""
    metrics = {
        name: [_finite(float(value)) for value in values] for name, values in history.items()
    }
    epochs = max((len(values) for values in metrics.values()), default=0)
    return TrainingHistory(run_id=run_id, trial_id=trial_id, epochs=epochs, metrics=metrics)
