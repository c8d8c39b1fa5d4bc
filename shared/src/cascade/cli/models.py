"""``cascade bless``, ``cascade rollback`` and ``cascade predict`` (added to ``cascade.cli.main``).

They act on the local cloud by default; ``--from-env`` uses the ``CASCADE_*`` settings of
a real project instead (``bless`` and ``rollback``: Vertex AI and the real bucket).
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
from typing import TYPE_CHECKING, Any

import click
import requests
from rich.console import Console
from rich.markup import escape

from cascade.core.context import StepContext, utc_now
from cascade.core.errors import CascadeError, TransientError
from cascade.core.settings import Settings, load_settings
from cascade.core.store import ArtifactStore
from cascade.localcloud import control
from cascade.localcloud.local_settings import LocalCloudSettings

if TYPE_CHECKING:
    from cascade.deploy.deployer import Deployer

__all__ = ["serving_commands", "serving_deployer"]

console = Console()


def _local() -> LocalCloudSettings:
    return LocalCloudSettings().absolute()


def _settings(from_env: bool) -> Settings:
    return load_settings() if from_env else _local().runtime_settings()


def _running_model_server_url() -> str:
    """The local model server's address; TransientError when the local cloud is down."""
    state = control.status(_local())
    url = None if state is None else state.environment.get("CASCADE_DEPLOY_MODEL_SERVER_URL")
    if not url:
        raise TransientError("the local cloud is not running (start it with `cascade up`)")
    return url


def _model_server_url() -> str:
    try:
        return _running_model_server_url()
    except TransientError as error:
        console.print(str(error))
        sys.exit(3)


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {escape(str(error))}")
    sys.exit(1)


@click.command()
@click.argument("run_id")
@click.option("--reason", required=True, help="Why this model may ship (recorded for audit).")
@click.option("--actor", default=None, help="Who blesses it [default: user@host].")
@click.option("--from-env", is_flag=True, help="Use CASCADE_* settings (a real project).")
def bless(run_id: str, reason: str, actor: str | None, from_env: bool) -> None:
    """Force-bless RUN_ID's candidate (audited): it is deployed as if it had passed."""
    from cascade.evaluation.override import force_bless

    ctx = StepContext.from_settings(_settings(from_env))
    try:
        record = force_bless(
            artifacts=ctx.artifacts,
            ledger=ctx.ledger,
            bus=ctx.bus,
            run_id=run_id,
            actor=actor or f"{getpass.getuser()}@{socket.gethostname()}",
            reason=reason,
            via="cli",
            now=utc_now(),
        )
    except CascadeError as error:
        _fail(error)
        return
    assert record.override is not None
    previous = record.override.previous_verdict
    console.print(f"{run_id}: force-blessed (was {previous}); model-blessed published")


def serving_deployer(artifacts: ArtifactStore, settings: Settings, from_env: bool) -> Deployer:
    """The deployer ``cascade rollback`` acts through (and ``cascade console``'s rollback
    and promote): Vertex AI with ``--from-env``, else the local model server."""
    from cascade.deploy.local_deployer import LocalDeployer
    from cascade.deploy.vertex_deployer import VertexDeployer

    if from_env:
        return VertexDeployer(
            artifacts, project=settings.project, region=settings.region, clock=utc_now
        )
    return LocalDeployer(artifacts, _running_model_server_url(), clock=utc_now)


@click.command()
@click.argument("dataset")
@click.option("--reason", default="", help="Why (recorded on serving.json's history).")
@click.option("--actor", default=None, help="Who rolls back [default: user@host].")
@click.option("--from-env", is_flag=True, help="Roll back the Vertex AI endpoint of a project.")
def rollback(dataset: str, reason: str, actor: str | None, from_env: bool) -> None:
    """Send all of DATASET's traffic back to the previously deployed version."""
    ctx = StepContext.from_settings(_settings(from_env))
    try:
        deployer = serving_deployer(ctx.artifacts, ctx.settings, from_env)
        rolled_back, serving = deployer.restore_previous(
            dataset,
            actor=actor or f"{getpass.getuser()}@{socket.gethostname()}",
            reason=" ".join(reason.split()),
        )
    except CascadeError as error:
        _fail(error)
        return
    console.print(f"{dataset}: version {rolled_back} rolled back; version {serving} serves 100%")


def _instances(text: str) -> list[Any]:
    """A JSON object (one instance), a list of them, or a body with ``instances``."""
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as file:
            text = file.read()
    value = json.loads(text)
    if isinstance(value, dict) and "instances" in value:
        value = value["instances"]
    return value if isinstance(value, list) else [value]


@click.command()
@click.argument("dataset")
@click.argument("instances", metavar="JSON")
@click.option("--version", default=None, help="Ask this version (default: the traffic split).")
def predict(dataset: str, instances: str, version: str | None) -> None:
    """Ask the local model server for predictions on JSON instances (or @file.json)."""
    try:
        body = {"instances": _instances(instances)}
    except (OSError, ValueError) as error:
        _fail(error)
        return
    path = f"/versions/{version}" if version else ""
    url = f"{_model_server_url()}/v1/models/{dataset}{path}:predict"
    response = requests.post(url, json=body, timeout=30)
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text}
    click.echo(json.dumps(answer, indent=2))
    if not response.ok:
        sys.exit(1)


serving_commands = [bless, rollback, predict]
