"""The ``evaluation`` section of a dataset's pipeline config: when is a candidate blessed.

    evaluation:
      first_run: absolute_only        # or manual_approval: no deployed model to compare with
      min_slice_examples: 30          # smaller slices are reported as skipped, not judged
      thresholds:
        - metric: auc
          tier: blocking              # blocking: not blessed; warning: blessed with an alert
          lower_bound: 0.70           # absolute bounds on the candidate's value
          max_regression: 0.01        # at most this much worse than the deployed model
          slices: true                # also per slice, not only overall
        - metric: loss
          tier: warning
          max_regression: 0.05
          relative: true              # max_regression is a fraction of the deployed value
        - metric: loss
          tier: blocking
          max_regression: 0.02
          relative: true
          slice: newest_files         # only on the rows of the newest accepted files
      monitoring:                     # continued evaluation of the served model
        metric: loss                  # scored on every labelled accepted file
        max_drop: 0.25                # worse than the served model's own evaluation by more
        relative: true                #   than this (a fraction of it): alert and retrain
        min_rows: 200                 # fewer scored rows: recorded, never judged
        max_rows: 20000               # more labelled rows: a deterministic sample

A regression is measured in the metric's harmful direction: down for metrics where higher
is better (``auc``, ``accuracy``...), up for ``loss``, ``mse``, ``mae`` and ``rmse`` (or set
``higher_is_better``). Both models are evaluated by the trainer on the same eval split.

Scopes: a threshold checks the overall metrics; ``slices: true`` also every slice — the
values of ``training.slice_features`` and ``newest_files``, the rows of the newest
accepted files (``cascade.transform.newest``: the files the production model was not
trained on). ``slice: newest_files`` (or ``slice: feature=value``) checks that one slice
instead of overall, so a candidate can be required not to be worse than production on
the new world by more than ``max_regression``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "LOWER_IS_BETTER",
    "EvaluationConfig",
    "FirstRunPolicy",
    "MetricThreshold",
    "MonitoringConfig",
    "Tier",
]

Tier = Literal["blocking", "warning"]
FirstRunPolicy = Literal["absolute_only", "manual_approval"]
LOWER_IS_BETTER = frozenset({"loss", "mse", "mae", "rmse"})
"""Metric names (optionally prefixed ``eval_``) where a smaller value is better."""


class MetricThreshold(BaseModel):
    """One metric's bounds in one tier; each bound that is set becomes a check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=1, description="A metric of metrics.json, e.g. auc, loss.")
    tier: Tier = "blocking"
    lower_bound: float | None = Field(None, description="The candidate's value must be >= this.")
    upper_bound: float | None = Field(None, description="The candidate's value must be <= this.")
    max_regression: float | None = Field(
        None, ge=0, description="Most the candidate may be worse than the deployed model."
    )
    relative: bool = Field(False, description="max_regression is a fraction of the baseline.")
    higher_is_better: bool | None = Field(
        None, description="Direction of improvement; inferred from the metric name when unset."
    )
    slices: bool = Field(False, description="Also check every slice, not only overall.")
    slice: str | None = Field(
        None,
        min_length=1,
        description="Check only this slice instead of overall: newest_files (the rows of "
        "the newest accepted files) or feature=value.",
    )

    @model_validator(mode="after")
    def _some_bound(self) -> MetricThreshold:
        if self.lower_bound is None and self.upper_bound is None and self.max_regression is None:
            raise ValueError(
                f"threshold on {self.metric!r} sets no bound: "
                "give lower_bound, upper_bound or max_regression"
            )
        if (
            self.lower_bound is not None
            and self.upper_bound is not None
            and self.lower_bound > self.upper_bound
        ):
            raise ValueError(f"threshold on {self.metric!r}: lower_bound > upper_bound")
        if self.slice is not None and self.slices:
            raise ValueError(
                f"threshold on {self.metric!r}: slice {self.slice!r} checks one slice and "
                "slices: true every slice; give one of them"
            )
        return self

    @property
    def metric_name(self) -> str:
        """The name in metrics.json (``eval_loss`` and ``loss`` are the same metric)."""
        return self.metric.removeprefix("eval_")

    @property
    def improves_upward(self) -> bool:
        if self.higher_is_better is not None:
            return self.higher_is_better
        return self.metric_name not in LOWER_IS_BETTER


def _default_thresholds() -> list[MetricThreshold]:
    """Every problem type has ``loss``: block a clear overall regression, warn on slices."""
    return [
        MetricThreshold(metric="loss", tier="blocking", max_regression=0.05, relative=True),
        MetricThreshold(
            metric="loss", tier="warning", max_regression=0.10, relative=True, slices=True
        ),
    ]


class MonitoringConfig(BaseModel):
    """Continued evaluation: the model serving a dataset, scored on each labelled file
    accepted into it (``cascade.evaluation.monitoring``), and when its decay retrains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Score accepted files that carry the label.")
    metric: str = Field("loss", min_length=1, description="The metric judged for decay.")
    max_drop: float = Field(
        0.25,
        ge=0,
        description="Most the served model may be worse on a file than at its evaluation "
        "(its own metrics.json value, else its first monitored file) before Cascade "
        "alerts and asks for training. The default, 25% of the loss, stays above the noise "
        "between two samples of a few hundred rows (a file's loss and the evaluation's each "
        "vary by some 5-10% from sample to sample); lower it for large files.",
    )
    relative: bool = Field(True, description="max_drop is a fraction of the reference value.")
    higher_is_better: bool | None = Field(
        None, description="Direction of improvement; inferred from the metric name when unset."
    )
    min_rows: int = Field(200, ge=1, description="Fewer scored rows are recorded, not judged.")
    max_rows: int = Field(
        20_000, ge=1, description="At most this many rows are scored (every k-th row beyond)."
    )
    batch_rows: int = Field(
        200, ge=1, le=5_000, description="Rows per prediction request to the served model."
    )

    @property
    def metric_name(self) -> str:
        return self.metric.removeprefix("eval_")

    @property
    def improves_upward(self) -> bool:
        if self.higher_is_better is not None:
            return self.higher_is_better
        return self.metric_name not in LOWER_IS_BETTER


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    first_run: FirstRunPolicy = Field(
        "absolute_only",
        description="With no deployed model: bless on the absolute bounds alone, or wait "
        "for a person (`cascade bless <run_id> --reason ...`).",
    )
    min_slice_examples: int = Field(30, ge=1, description="Smaller slices are skipped.")
    thresholds: list[MetricThreshold] = Field(default_factory=_default_thresholds)
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Continued evaluation of the served model on each labelled file.",
    )
