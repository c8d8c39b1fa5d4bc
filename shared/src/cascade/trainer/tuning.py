"""Reporting the tuning metric in the file format Vertex AI's tuner reads (cloudml-hypertune)."""

from __future__ import annotations

from pathlib import Path

import hypertune

__all__ = ["report_tuning_metric"]


def report_tuning_metric(
    tag: str, value: float, *, global_step: int, metric_file: str | None, trial_id: str | None
) -> None:
    """Append ``{tag: value, global_step, trial}`` to the metric file.

    ``metric_file`` is ``CLOUD_ML_HP_METRIC_FILE`` as read at the entry point; None keeps
    hypertune's default (``/tmp/hypertune/output.metrics``, where Vertex AI looks).
    """
    tuner = hypertune.HyperTune()
    if metric_file:
        Path(metric_file).parent.mkdir(parents=True, exist_ok=True)
        tuner.metric_path = metric_file
    if trial_id:
        tuner.trial_id = trial_id
    tuner.report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=tag, metric_value=value, global_step=global_step
    )
