"""report: render a run's HTML report when the run ends (``RunEnded`` on ``run-ended``).

The steps that end runs (and the dead-letters function, which fails them) announce the
end once run.json holds it; this function renders ``runs/<run_id>/report.html`` from the
run's artifacts (``cascade.report``). Rendering reads the run's statistics and
monitoring series (pyarrow, numpy) and fills a Jinja2 template, so it lives here, alone
with those libraries, and the steps install none of them.

Idempotent: a redelivery, or an announcement repeated by a redelivered step, writes
nothing when the run has not changed since its report was rendered (``refresh_run_report``
compares the report's fingerprint of the run's record); a run whose run.json, claims or
results changed since has its report rendered again. A run without a
record is a permanent error (acknowledged, alerted); a transient storage error
propagates, so the message is redelivered and, after its attempts, dead-lettered with
the reason.
"""

from __future__ import annotations

import logging

from cascade.core.context import StepContext
from cascade.core.messages import RunEnded
from cascade.report import refresh_run_report

__all__ = ["render_ended_run"]

_log = logging.getLogger("cascade.steps.report")


def render_ended_run(ctx: StepContext, message: RunEnded, *, event_id: str = "") -> None:
    """Write the report of the run ``message`` announces (``RunPaths.report``)."""
    uri = refresh_run_report(ctx.artifacts, message.run_id)
    labels = {"labels": {"run_id": message.run_id, "event_id": event_id}}
    if uri is None:
        _log.info(
            "run report of %s (%s) already shows the run as it is; nothing written",
            message.run_id,
            message.state,
            extra=labels,
        )
        return
    _log.info("run report of %s (%s): %s", message.run_id, message.state, uri, extra=labels)
