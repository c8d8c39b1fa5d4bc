"""A run's steps on one time axis: where each started and how long it took, as shares
of the run's span (the run page draws them as bars). Built from the run report's
summary (``cascade.report``), so the page and the report show the same steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cascade.report import RunReport
from cascade.report.page_model import StepView

__all__ = ["TimelineStep", "timeline"]


@dataclass(frozen=True)
class TimelineStep:
    step: StepView
    offset_pct: float
    """Where the step starts, in percent of the run's span (0 to 99.5)."""
    width_pct: float
    """Its length in percent (at least 0.5, so an instant step still shows)."""


def timeline(report: RunReport) -> list[TimelineStep]:
    """The run's steps in the order they started; a running step lasts until the run's
    last update; a step without a start time is drawn at the start."""
    summary = report.summary
    start = summary.created_at
    starts = [step.started_at for step in summary.steps if step.started_at is not None]
    ends = [step.finished_at for step in summary.steps if step.finished_at is not None]
    start = min([start, *starts])
    end = max([summary.updated_at, *ends])
    span = max((end - start).total_seconds(), 1e-6)

    def share(moment: datetime) -> float:
        return (moment - start).total_seconds() / span * 100

    shown = []
    ordered = sorted(summary.steps, key=lambda step: step.started_at or start)
    for step in ordered:
        began = step.started_at or start
        offset = min(max(share(began), 0.0), 99.5)
        width = share(step.finished_at or summary.updated_at) - share(began)
        width = min(max(width, 0.5), 100 - offset)
        shown.append(TimelineStep(step, round(offset, 2), round(width, 2)))
    return shown
