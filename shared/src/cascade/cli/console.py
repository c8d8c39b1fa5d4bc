"""``cascade console``: the web console on 127.0.0.1, over the local cloud's artifacts
bucket (or, with ``--from-env``, the environment's project). ``--reindex`` indexes runs
made before the run index existed and exits."""

from __future__ import annotations

import getpass
import socket

import click
import uvicorn
from rich.console import Console

from cascade.cli.cloud_settings import command_settings
from cascade.console import Caller, create_app
from cascade.console.wiring import console_config
from cascade.core.run_index import backfill_run_index

__all__ = ["DEFAULT_PORT", "console_command"]

DEFAULT_PORT = 8090
LOOPBACK = "127.0.0.1"


@click.command("console")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    envvar="CASCADE_CONSOLE_PORT",
    type=click.IntRange(1, 65535),
    help="Port on 127.0.0.1.",
)
@click.option(
    "--reindex",
    is_flag=True,
    help="Add the run index's entries for runs made before it existed, then exit.",
)
@click.option("--from-env", is_flag=True, help="Use CASCADE_* settings (a real project).")
def console_command(port: int, reindex: bool, from_env: bool) -> None:
    """Serve the web console (runs, a run's steps and report, retrain) on 127.0.0.1."""
    printer = Console()
    settings = command_settings(from_env, printer)
    local_user = Caller(f"{getpass.getuser()}@{socket.gethostname()}")
    config = console_config(settings, caller_of=lambda request: local_user)
    if reindex:
        indexed = backfill_run_index(config.artifacts)
        click.echo(f"indexed {indexed} run(s) in gs://{settings.artifacts_bucket}/index/runs/")
        return
    click.echo(f"console: http://{LOOPBACK}:{port}/ (acting as {local_user.name}; Ctrl-C stops)")
    uvicorn.run(create_app(config), host=LOOPBACK, port=port, log_level="warning")
