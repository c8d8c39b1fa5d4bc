"""history.json from Keras's History: one value per epoch, non-finite values as null."""

from __future__ import annotations

import math

from cascade.trainer.history import TrainingHistory, training_history


def test_history_keeps_every_epoch_and_turns_non_finite_values_into_none() -> None:
    logs = {"loss": [0.7, 0.5, math.nan], "val_loss": [0.8, math.inf, 0.6]}

    history = training_history("credit-1", logs, trial_id="3")

    assert history.epochs == 3
    assert history.trial_id == "3"
    assert history.metrics == {"loss": [0.7, 0.5, None], "val_loss": [0.8, None, 0.6]}
    assert TrainingHistory.model_validate_json(history.model_dump_json()) == history


def test_history_of_no_epochs_is_empty() -> None:
    history = training_history("credit-1", {})

    assert (history.epochs, history.metrics) == (0, {})
