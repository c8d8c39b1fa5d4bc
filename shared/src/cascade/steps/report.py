"""report: render a run's HTML report when the run ends (``RunEnded`` on ``run-ended``).

The steps that end runs (and the dead-letters function, which fails them) announce the
end once run.json holds it; this function renders ``runs/<run_id>/report.html`` from the
run's artifacts (``cascade.report``). Rendering reads the run's statistics and
monitoring series (pyarrow, numpy) and fills a Jinja2 template, so it lives here, alone
with those libraries, and the steps install none of them.

Idempotent: a redelivery, or the announcement of a run that ended twice (a step and a
dead letter), renders the report again from what is stored, which is the same report or a
newer one. A run without a record is a permanent error (acknowledged, alerted); a
transient storage error propagates, so the message is redelivered and, after its
attempts, dead-lettered with the reason.
"""

from __future__ import annotations

import logging

from cascade.core.context import StepContext
from cascade.core.messages import RunEnded
from cascade.report import write_run_report

__all__ = ["render_ended_run"]

_log = logging.getLogger("cascade.steps.report")


def render_ended_run(ctx: StepContext, message: RunEnded, *, event_id: str = "") -> None:
    """Write the report of the run ``message`` announces (``RunPaths.report``)."""
    uri = write_run_report(ctx.artifacts, message.run_id)
    _log.info(
        "run report of %s (%s): %s",
        message.run_id,
        message.state,
        uri,
        extra={"labels": {"run_id": message.run_id, "event_id": event_id}},
    )
