"""The run report's public entry points: render it, or render and store it beside the run.

``runs/<run_id>/report.html`` in the artifacts bucket (``RunPaths.report``), with
content type ``text/html``; rewritten each time, so it shows the run as it is now.

``refresh_run_report`` (the report function's entry) renders only when the run changed
since the stored report was rendered: the report carries, as custom metadata
(``RENDERED_FROM_KEY``), a fingerprint of the objects that make the run's record
(run.json, its steps' claims and results, by generation), and a second announcement of
an unchanged run writes nothing. Every artifact a section shows is written before the
step's result, so a run whose fingerprint is unchanged shows the same report.
"""

from __future__ import annotations

import hashlib
import json

from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore
from cascade.report.collect import RunNotFoundError, collect_run_report
from cascade.report.render import render_html

__all__ = [
    "RENDERED_FROM_KEY",
    "REPORT_CONTENT_TYPE",
    "refresh_run_report",
    "render_run_report",
    "run_fingerprint",
    "store_report_html",
    "write_run_report",
]

REPORT_CONTENT_TYPE = "text/html; charset=utf-8"
RENDERED_FROM_KEY = "cascade-rendered-from"
"""The report's custom metadata: the ``run_fingerprint`` it was rendered from."""


def render_run_report(
    artifacts: ArtifactStore, run_id: str, *, serving_plan_note: str | None = None
) -> str:
    """The HTML report of ``run_id`` (RunNotFoundError when the run has no record);
    ``serving_plan_note`` says why its serving plan could not be refreshed."""
    return render_html(collect_run_report(artifacts, run_id, serving_plan_note=serving_plan_note))


def store_report_html(
    artifacts: ArtifactStore, run_id: str, html: str, *, rendered_from: str | None = None
) -> str:
    """Write an already rendered report to ``runs/<run_id>/report.html``; its URI.
    ``rendered_from``: the ``run_fingerprint`` read before rendering, kept with it."""
    name = RunPaths(run_id).report
    metadata = None if rendered_from is None else {RENDERED_FROM_KEY: rendered_from}
    artifacts.write(name, html.encode("utf-8"), content_type=REPORT_CONTENT_TYPE, metadata=metadata)
    return artifacts.uri(name)


def run_fingerprint(artifacts: ArtifactStore, run_id: str) -> str | None:
    """A digest of the generations of run.json and of the run's claims and results (what
    ``RunLedger.get`` assembles the run from); None when the run has no record."""
    paths = RunPaths(run_id)
    record = artifacts.stat(paths.record)
    if record is None:
        return None
    parts = [(paths.record, record.generation)]
    for folder in (f"{paths.root}/claims/", f"{paths.root}/results/"):
        parts.extend((info.name, info.generation) for info in artifacts.list_objects(folder))
    return hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest()


def refresh_run_report(artifacts: ArtifactStore, run_id: str) -> str | None:
    """Render and store the report unless the stored one was rendered from the run as it
    is now; the written report's URI, or None when nothing was written.
    RunNotFoundError when the run has no record."""
    fingerprint = run_fingerprint(artifacts, run_id)
    if fingerprint is None:
        raise RunNotFoundError(f"no run {run_id} in {artifacts.uri('runs/')}")
    stored = artifacts.stat(RunPaths(run_id).report)
    if stored is not None and stored.metadata.get(RENDERED_FROM_KEY) == fingerprint:
        return None
    html = render_run_report(artifacts, run_id)
    return store_report_html(artifacts, run_id, html, rendered_from=fingerprint)


def write_run_report(artifacts: ArtifactStore, run_id: str) -> str:
    """Render the report, write it to ``runs/<run_id>/report.html``; its ``gs://`` URI."""
    return store_report_html(artifacts, run_id, render_run_report(artifacts, run_id))
