"""``cascade report RUN_ID``: a run's HTML report, in the bucket and on this machine.

Registered on the main ``cascade`` group from ``report_commands``. This module is an
edge: it finds the local cloud and its artifacts bucket; ``cascade.report`` does the
work. Before rendering, it refreshes the dataset's serving plan when the dataset has a
deployed model (the request log has something to say then): best-effort, since a
report is most wanted when something is down, so any failure becomes a one-line note
in the report's serving plan section (``--no-serving-plan`` skips it).
"""

from __future__ import annotations

import os
import re
import webbrowser
from pathlib import Path

import click

from cascade.core.errors import CascadeError
from cascade.core.runs import RunLedger
from cascade.core.store import ArtifactStore
from cascade.core.warehouse import make_bigquery_client
from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.report import render_run_report, store_report_html
from cascade.report.serving_plan import save_serving_plan, serving_plan_due
from cascade.report.serving_plan_compute import (
    REQUEST_LOG_TABLE_ENV,
    compute_serving_plan,
    request_log_table,
)

__all__ = ["DEFAULT_REPORTS_DIR", "PLAN_DEADLINE_S", "report", "report_commands"]

DEFAULT_REPORTS_DIR = Path(".cascade/reports")
PLAN_DEADLINE_S = 20.0
"""How long the report waits for BigQuery's request log before it renders without a
fresh plan (the serving-plan command itself waits as long as the client retries)."""
_NOTE_CHARS = 300
# A run id becomes a file name: no separators, no leading dot (ids are <dataset>-<hex>).
_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,199}$")


def _run_id(context: click.Context, parameter: click.Parameter, value: str) -> str:
    if not _RUN_ID.fullmatch(value):
        raise click.BadParameter("a run id is lowercase letters, digits, '-' and '_'")
    return value


@click.command()
@click.argument("run_id", callback=_run_id)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Local copy of the report [default: {DEFAULT_REPORTS_DIR}/RUN_ID.html].",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the local copy in a browser.")
@click.option(
    "--no-serving-plan",
    "skip_plan",
    is_flag=True,
    help="Do not refresh the dataset's serving plan from the request log (the report "
    "shows the stored one, if any).",
)
def report(run_id: str, out_path: Path | None, open_browser: bool, skip_plan: bool) -> None:
    """Build RUN_ID's HTML report: write it to the run's folder in the artifacts bucket
    and to a local file, and print both locations.

    When the run deployed a model or the dataset has one serving, first compute the
    dataset's serving plan from the last 7 days of its request log and store it
    (`cascade serving-plan DATASET --save`); if that fails the report says why.
    """
    local_cloud = LocalCloudSettings().absolute()
    if control.status(local_cloud) is None:
        raise click.ClickException("the local cloud is not running (start it with `cascade up`)")
    artifacts = LocalCloudClient(local_cloud.runtime_settings()).artifacts
    note = None if skip_plan else _refresh_serving_plan(local_cloud, artifacts, run_id)
    try:
        html = render_run_report(artifacts, run_id, serving_plan_note=note)
        uri = store_report_html(artifacts, run_id, html)
    except CascadeError as error:
        raise click.ClickException(str(error)) from error
    local = (out_path or DEFAULT_REPORTS_DIR / f"{run_id}.html").absolute()
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(html, encoding="utf-8")
    click.echo(f"report: {uri}")
    click.echo(f"local copy: {local}")
    if open_browser:
        webbrowser.open(local.as_uri())


def _one_line(text: str) -> str:
    """``text`` on one line of at most ``_NOTE_CHARS`` characters (errors of HTTP
    clients span lines and quote whole responses)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _NOTE_CHARS else flat[: _NOTE_CHARS - 1] + "…"


def _refresh_serving_plan(
    local_cloud: LocalCloudSettings, artifacts: ArtifactStore, run_id: str
) -> str | None:
    """Compute and store the run's dataset's serving plan when it has a deployed model.

    None when it was stored, or when there is no run (the report says so) or nothing
    deployed (no request log to read); else the one-line reason there is no fresh plan,
    also printed. Never raises: whatever fails, the report still renders.
    """
    try:
        record = RunLedger(artifacts).get(run_id)
        if record is None or not serving_plan_due(artifacts, record):
            return None
        settings = control.running_settings(local_cloud)
        stored = compute_serving_plan(
            artifacts,
            record.dataset,
            bigquery_client=lambda: make_bigquery_client(settings),
            table=os.environ.get(REQUEST_LOG_TABLE_ENV) or request_log_table(settings),
            deadline_s=PLAN_DEADLINE_S,
        )
        uri = save_serving_plan(artifacts, stored)
    except Exception as error:  # noqa: BLE001 - best effort: the report renders without it
        reason = _one_line(str(error) or type(error).__name__)
        click.echo(f"serving plan: not refreshed: {reason}", err=True)
        return f"No fresh serving plan for this report: {reason}"
    click.echo(f"serving plan: {uri} (recommended {stored.plan.mode})")
    return None


report_commands: list[click.Command] = [report]
