"""The tuning metric a trial reported, read from cloudml-hypertune's metric file.

``hypertune.HyperTune().report_hyperparameter_tuning_metric(tag, value, step)`` rewrites
``CLOUD_ML_HP_METRIC_FILE`` with one JSON object per report (the last 100), e.g.
``{"eval_loss": "0.31", "global_step": "3", "timestamp": 1.7e9, "trial": "2"}``; values
are strings. Like the StudySpec's BEST_MEASUREMENT selection, a trial scores its best
reported value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["read_trial_metric", "write_trial_metric"]


def read_trial_metric(path: Path, metric: str, *, maximize: bool) -> float | None:
    """The trial's best finite value of ``metric``; None when it reported none."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    values = []
    for line in lines:
        try:
            entry = json.loads(line)
            value = float(entry[metric])
        except (ValueError, KeyError, TypeError):
            continue
        if math.isfinite(value):
            values.append(value)
    if not values:
        return None
    return max(values) if maximize else min(values)


def write_trial_metric(path: Path, metric: str, value: float, *, trial: str, step: int) -> None:
    """Append one report in the library's format (for trainers without the library)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"global_step": str(step), metric: str(float(value)), "trial": trial}
    with path.open("a") as metric_file:
        metric_file.write(json.dumps(entry, sort_keys=True) + "\n")
