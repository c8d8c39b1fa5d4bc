"""``cascade tensorboard RUN_ID``: a run's training curves in TensorBoard (added to cli)."""

from __future__ import annotations

import shlex
import subprocess
import sys

import click
from rich.console import Console
from rich.markup import escape

from cascade.core.errors import CascadeError
from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.report.tensorboard_logs import (
    TensorBoardLogs,
    download_tensorboard_logs,
    tensorboard_command,
)

__all__ = ["tensorboard_commands"]

console = Console()


def _download(local: LocalCloudSettings, run_id: str) -> TensorBoardLogs:
    if control.status(local) is None:
        console.print("the local cloud is not running (start it with `cascade up`)")
        sys.exit(3)
    client = LocalCloudClient(local.runtime_settings())
    try:
        logs = download_tensorboard_logs(client.artifacts, run_id, local.state_dir / "tensorboard")
    except CascadeError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        sys.exit(1)
    for name in logs.refused:
        console.print(f"[yellow]refused object name[/yellow] {escape(name)}")
    if not logs.files:
        console.print(
            f"run {run_id} has no TensorBoard logs yet (they appear once its training job "
            f"has run an epoch): see `cascade run {run_id}`"
        )
        sys.exit(1)
    console.print(f"copied {len(logs.files)} event file(s) to {logs.directory}", soft_wrap=True)
    return logs


@click.command()
@click.argument("run_id")
@click.option(
    "--port", default=6006, show_default=True, type=click.IntRange(1, 65535), help="Port."
)
@click.option("--print-only", is_flag=True, help="Copy the logs and print the command only.")
def tensorboard(run_id: str, port: int, print_only: bool) -> None:
    """Show RUN_ID's training curves (loss and metrics per epoch) in TensorBoard.

    Copies the run's event files (its AIP_TENSORBOARD_LOG_DIR, training/logs/, and each
    tuning trial's training/<trial id>/logs/) from the artifacts bucket to
    .cascade/tensorboard/RUN_ID/ and runs TensorBoard on it, on 127.0.0.1 only, in the
    foreground (Ctrl-C stops it).
    """
    local = LocalCloudSettings().absolute()
    logs = _download(local, run_id)
    try:
        command = tensorboard_command(logs.directory, port)
    except FileNotFoundError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        sys.exit(1)
    console.print(escape(shlex.join(command)), soft_wrap=True)
    if print_only:
        return
    console.print(f"open http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    try:
        completed = subprocess.run(command, check=False)  # noqa: S603 - argv built here
    except KeyboardInterrupt:
        return
    sys.exit(completed.returncode)


tensorboard_commands = [tensorboard]
