"""``cascade report RUN_ID``: a run's HTML report, in the bucket and on this machine.

Registered on the main ``cascade`` group from ``report_commands``. This module is an
edge: it finds the local cloud and its artifacts bucket; ``cascade.report`` does the
work.
"""

from __future__ import annotations

import re
import webbrowser
from pathlib import Path

import click

from cascade.core.errors import CascadeError
from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.report import render_run_report, store_report_html

__all__ = ["DEFAULT_REPORTS_DIR", "report", "report_commands"]

DEFAULT_REPORTS_DIR = Path(".cascade/reports")
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
def report(run_id: str, out_path: Path | None, open_browser: bool) -> None:
    """Build RUN_ID's HTML report: write it to the run's folder in the artifacts bucket
    and to a local file, and print both locations."""
    local_cloud = LocalCloudSettings().absolute()
    if control.status(local_cloud) is None:
        raise click.ClickException("the local cloud is not running (start it with `cascade up`)")
    artifacts = LocalCloudClient(local_cloud.runtime_settings()).artifacts
    try:
        html = render_run_report(artifacts, run_id)
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


report_commands: list[click.Command] = [report]
