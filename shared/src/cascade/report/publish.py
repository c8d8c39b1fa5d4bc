"""The run report's public entry points: render it, or render and store it beside the run.

``runs/<run_id>/report.html`` in the artifacts bucket (``RunPaths.report``), with
content type ``text/html``; rewritten each time, so it shows the run as it is now.
"""

from __future__ import annotations

from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore
from cascade.report.collect import collect_run_report
from cascade.report.render import render_html

__all__ = ["REPORT_CONTENT_TYPE", "render_run_report", "store_report_html", "write_run_report"]

REPORT_CONTENT_TYPE = "text/html; charset=utf-8"


def render_run_report(
    artifacts: ArtifactStore, run_id: str, *, serving_plan_note: str | None = None
) -> str:
    """The HTML report of ``run_id`` (RunNotFoundError when the run has no record);
    ``serving_plan_note`` says why its serving plan could not be refreshed."""
    return render_html(collect_run_report(artifacts, run_id, serving_plan_note=serving_plan_note))


def store_report_html(artifacts: ArtifactStore, run_id: str, html: str) -> str:
    """Write an already rendered report to ``runs/<run_id>/report.html``; its URI."""
    name = RunPaths(run_id).report
    artifacts.write(name, html.encode("utf-8"), content_type=REPORT_CONTENT_TYPE)
    return artifacts.uri(name)


def write_run_report(artifacts: ArtifactStore, run_id: str) -> str:
    """Render the report, write it to ``runs/<run_id>/report.html``; its ``gs://`` URI."""
    return store_report_html(artifacts, run_id, render_run_report(artifacts, run_id))
