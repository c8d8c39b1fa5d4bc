"""The HTML run report: one self-contained page per run, from the run's artifacts.

``write_run_report`` renders it and stores it as ``runs/<run_id>/report.html``;
``refresh_run_report`` does so only when the run changed since the stored report was
rendered; ``render_run_report`` only renders. ``collect`` reads the artifacts into a typed
``RunReport`` (summary, validation, training, evaluation, deployment, the dataset's
stored serving plan), ``charts`` lays out the inline SVG charts, ``render`` fills the
Jinja2 template. ``serving_plan`` keeps the serving advisor's plan per dataset and
``serving_plan_compute`` computes it from the request log (for ``cascade serving-plan
--save`` and ``cascade report``). See docs/observability.md.
"""

from cascade.report.collect import RunNotFoundError, collect_run_report
from cascade.report.page_model import RunReport
from cascade.report.publish import (
    RENDERED_FROM_KEY,
    REPORT_CONTENT_TYPE,
    refresh_run_report,
    render_run_report,
    run_fingerprint,
    store_report_html,
    write_run_report,
)

__all__ = [
    "RENDERED_FROM_KEY",
    "REPORT_CONTENT_TYPE",
    "RunNotFoundError",
    "RunReport",
    "collect_run_report",
    "refresh_run_report",
    "render_run_report",
    "run_fingerprint",
    "store_report_html",
    "write_run_report",
]
