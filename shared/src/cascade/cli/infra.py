"""CLI commands for deploying: ``package-functions`` and ``verify-deployment``.

Registered on the main ``cascade`` group from ``infra_commands``. This module is an
edge: it reads settings and builds the Google Cloud clients; the logic lives in
``cascade.cli.packaging`` and ``cascade.cli.verify_deployment`` (imported only when the check
runs, so importing the CLI does not need google-cloud-functions).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cascade.cli.packaging import RepositoryLayout, package_functions, read_pins
from cascade.core.errors import InvalidConfigError
from cascade.core.settings import Settings, load_settings
from cascade.core.topology import load_topology

if TYPE_CHECKING:
    from cascade.cli.verify_deployment import DeploymentTarget

__all__ = ["infra_commands", "package_functions_command", "verify_deployment_command"]

DEFAULT_TOPOLOGY = Path("infra/topology.yaml")

_topology_option = click.option(
    "--topology",
    "topology_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_TOPOLOGY,
    show_default=True,
    envvar="CASCADE_TOPOLOGY",
    help="The trigger topology file.",
)


@click.command("package-functions")
@_topology_option
@click.option(
    "--repo-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Repository root: functions/ and shared/ are found under it.",
)
@click.option(
    "--output",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build/functions"),
    show_default=True,
    help="Where staging folders, zips and manifest.json are written.",
)
@click.option(
    "--pins",
    "pins_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Requirements lock file whose name==version lines pin the functions' dependencies.",
)
def package_functions_command(
    topology_path: Path, repo_root: Path, output_dir: Path, pins_file: Path | None
) -> None:
    """Build each function's source zip, named by content hash, and manifest.json."""
    try:
        topology = load_topology(topology_path)
        pins = read_pins(pins_file) if pins_file else {}
        packages = package_functions(
            topology, RepositoryLayout(root=repo_root), output_dir, pins=pins
        )
    except InvalidConfigError as error:
        raise click.ClickException(str(error)) from error
    for package in packages:
        click.echo(f"{package.function:24} {package.zip_path}")


def _target_from(settings: Settings, name_prefix: str | None) -> DeploymentTarget:
    from cascade.cli.verify_deployment import DeploymentTarget

    return DeploymentTarget(
        project=settings.project,
        region=settings.region,
        name_prefix=settings.topic_prefix if name_prefix is None else name_prefix,
        buckets={"landing": settings.landing_bucket, "artifacts": settings.artifacts_bucket},
    )


@click.command("verify-deployment")
@_topology_option
@click.option(
    "--name-prefix",
    default=None,
    help="Terraform's name_prefix. Defaults to CASCADE_TOPIC_PREFIX, which Terraform sets equal.",
)
def verify_deployment_command(topology_path: Path, name_prefix: str | None) -> None:
    """Check that every topology function is ACTIVE with its trigger, retries and identity.

    Project, region and bucket names come from the CASCADE_* environment (the
    `runtime_environment` output of Terraform). Exits 1 when anything differs.
    """
    # Imported here so that the rest of the CLI works without google-cloud-functions.
    from google.cloud.functions_v2 import FunctionServiceClient
    from google.pubsub_v1 import PublisherClient, SubscriberClient

    from cascade.cli.verify_deployment import verify_deployment

    try:
        topology = load_topology(topology_path)
    except InvalidConfigError as error:
        raise click.ClickException(str(error)) from error
    report = verify_deployment(
        topology,
        _target_from(load_settings(), name_prefix),
        functions_client=FunctionServiceClient(),
        subscriber_client=SubscriberClient(),
        publisher_client=PublisherClient(),
    )
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        raise click.exceptions.Exit(1)


infra_commands: list[click.Command] = [package_functions_command, verify_deployment_command]
