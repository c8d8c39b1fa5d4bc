"""``cascade schema show`` and ``cascade schema accept-feature`` (added to ``cascade.cli.main``).

The schema decides which columns are features: only they enter the baseline and the
transform. A new column stays a warning of the files that bring it until a person
takes it in, by editing ``schema.pbtxt`` or with ``accept-feature``. Both commands act
on the local cloud by default; ``--from-env`` uses the ``CASCADE_*`` settings of a
real project.
"""

from __future__ import annotations

import getpass
import socket
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade.core.clients import make_storage_client
from cascade.core.context import utc_now
from cascade.core.errors import CascadeError
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.settings import Settings, load_settings
from cascade.core.store import ArtifactStore
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.validation.schema_store import accept_feature, read_schema, schema_rows

__all__ = ["schema"]

console = Console()


def _settings(from_env: bool) -> Settings:
    return load_settings() if from_env else LocalCloudSettings().absolute().runtime_settings()


def _artifacts(from_env: bool) -> ArtifactStore:
    """The artifacts bucket of the local cloud, or of the project ``CASCADE_*`` names."""
    settings = _settings(from_env)
    return ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {escape(str(error))}")
    sys.exit(1)


@click.group()
def schema() -> None:
    """Read a dataset's schema and take new columns into it (datasets/<d>/schema.pbtxt)."""


@schema.command("show")
@click.argument("dataset")
@click.option("--text", "as_text", is_flag=True, help="Print the stored schema.pbtxt as is.")
@click.option("--from-env", is_flag=True, help="Use CASCADE_* settings (a real project).")
def show(dataset: str, as_text: bool, from_env: bool) -> None:
    """Show DATASET's schema: each feature, its type, constraints and whether it trains."""
    try:
        stored = read_schema(_artifacts(from_env), dataset)
    except CascadeError as error:
        _fail(error)
        return
    if stored is None:
        console.print(
            f"dataset {dataset} has no schema yet: its first accepted file's columns become it"
        )
        sys.exit(1)
    if as_text:
        click.echo(stored.text, nl=False)
        return
    table = Table(title=f"{stored.versioned_uri}: {len(stored.schema.feature)} features")
    for column in ("feature", "type", "min presence", "domain", "drift", "status"):
        table.add_column(column)
    for row in schema_rows(stored):
        table.add_row(
            escape(row["feature"]),
            row["type"],
            row["presence"],
            row["domain"],
            row["drift"],
            row["status"],
        )
    console.print(table)


@schema.command("accept-feature")
@click.argument("dataset")
@click.argument("feature")
@click.option("--reason", required=True, help="Why the column becomes a feature (recorded).")
@click.option(
    "--run",
    "run_id",
    default=None,
    help="Infer it from this run's file (e.g. a quarantined one) [default: the baseline, "
    "else the newest accepted file that has the column].",
)
@click.option("--actor", default=None, help="Who accepts it [default: user@host].")
@click.option("--from-env", is_flag=True, help="Use CASCADE_* settings (a real project).")
def accept_feature_command(
    dataset: str, feature: str, reason: str, run_id: str | None, actor: str | None, from_env: bool
) -> None:
    """Take the column FEATURE into DATASET's schema: from the next accepted file on, its
    statistics enter the baseline and the transform fits it."""
    store = _artifacts(from_env)
    try:
        config = load_pipeline_config(store, dataset).validation
        accepted = accept_feature(
            store,
            dataset,
            feature,
            reason=reason,
            actor=actor or f"{getpass.getuser()}@{socket.gethostname()}",
            now=utc_now(),
            config=config,
            run_id=run_id,
        )
    except CascadeError as error:
        _fail(error)
        return
    if not accepted.added:
        console.print(f"{escape(feature)} is already an active feature of {accepted.schema_uri}")
        return
    console.print(
        f"{escape(feature)} added to {accepted.schema_uri} (inferred from the statistics of "
        f"{escape(accepted.statistics_from)}); the next accepted file's statistics of it "
        "enter the baseline and the next transform fits it:"
    )
    click.echo(accepted.feature_text, nl=False)
