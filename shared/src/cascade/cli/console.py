"""``cascade console``: the web console on 127.0.0.1, over the local cloud's artifacts
bucket (or, with ``--from-env``, the environment's project). ``--reindex`` indexes runs
made before the run index existed and exits."""

from __future__ import annotations

import getpass
import socket
import subprocess
import threading
from pathlib import Path

import click
import uvicorn
from rich.console import Console

from cascade.cli.cloud_settings import command_settings
from cascade.cli.models import serving_deployer
from cascade.console import Caller, create_app
from cascade.console.wiring import console_config
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.run_index import backfill_run_index
from cascade.core.settings import load_settings
from cascade.core.store import ArtifactStore
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.report.tensorboard_logs import download_tensorboard_logs, tensorboard_command

__all__ = ["DEFAULT_PORT", "TensorBoardLauncher", "console_command"]

DEFAULT_PORT = 8090
LOOPBACK = "127.0.0.1"


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class TensorBoardLauncher:
    """The console's "Start TensorBoard": what ``cascade tensorboard RUN_ID`` does (copy
    the run's event files to ``<root>/<run_id>/``, run TensorBoard on 127.0.0.1), in the
    background on a free port; one per run while the console runs, its address answered
    again while it lives. BadRequestError when the run has no logs yet or TensorBoard is
    not installed (the page shows why)."""

    def __init__(self, artifacts: ArtifactStore, root: Path) -> None:
        self._artifacts = artifacts
        self._root = root
        self._running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self._lock = threading.Lock()

    def __call__(self, run_id: str) -> str:
        with self._lock:
            running = self._running.get(run_id)
            if running is not None and running[0].poll() is None:
                return running[1]
            logs = download_tensorboard_logs(self._artifacts, run_id, self._root)
            if not logs.files:
                raise BadRequestError(
                    f"run {run_id} has no TensorBoard logs yet (they appear once its "
                    "training job has run an epoch)"
                )
            port = _free_loopback_port()
            try:
                command = tensorboard_command(logs.directory, port)
            except FileNotFoundError as error:
                raise BadRequestError(str(error)) from error
            process = subprocess.Popen(  # noqa: S603 - argv built by tensorboard_command
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            address = f"http://{LOOPBACK}:{port}/"
            self._running[run_id] = (process, address)
            return address

    def close(self) -> None:
        """Stop the TensorBoards this console started."""
        with self._lock:
            for process, _ in self._running.values():
                process.terminate()
            for process, _ in self._running.values():
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            self._running.clear()


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
@click.option(
    "--local-cloud-child",
    is_flag=True,
    hidden=True,
    help="Started by `cascade up`: the local cloud's settings from the environment its "
    "supervisor gives its children (the cloud is not ready yet), its identity included.",
)
def console_command(port: int, reindex: bool, from_env: bool, local_cloud_child: bool) -> None:
    """Serve the web console (runs, a run's steps and report, retrain) on 127.0.0.1."""
    printer = Console()
    if local_cloud_child and from_env:
        raise click.UsageError("--local-cloud-child serves the local cloud, not --from-env")
    settings = load_settings() if local_cloud_child else command_settings(from_env, printer)
    local_user = Caller(f"{getpass.getuser()}@{socket.gethostname()}")
    config = console_config(settings, caller_of=lambda request: local_user)
    if reindex:
        indexed = backfill_run_index(config.artifacts)
        click.echo(f"indexed {indexed} run(s) in gs://{settings.artifacts_bucket}/index/runs/")
        return
    config.deployer = lambda: serving_deployer(config.artifacts, settings, from_env)
    config.step_context = lambda: StepContext.from_settings(settings)  # reviews, as the CLI
    config.vertex_tensorboard = settings.vertex_tensorboard  # a project's: links, not a server
    launcher = None
    if not from_env:
        state_dir = LocalCloudSettings().absolute().state_dir
        launcher = TensorBoardLauncher(config.artifacts, state_dir / "tensorboard")
        config.tensorboard = launcher
    click.echo(f"console: http://{LOOPBACK}:{port}/ (acting as {local_user.name}; Ctrl-C stops)")
    try:
        uvicorn.run(create_app(config), host=LOOPBACK, port=port, log_level="warning")
    finally:
        if launcher is not None:
            launcher.close()
