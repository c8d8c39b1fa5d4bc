"""``cascade model-module push``: store a dataset's model code (added to ``cascade.cli.main``).

A dataset whose config says ``training.model: custom`` trains with the module named by
``training.model_module`` (e.g. ``models/churn.py``), stored in the artifacts bucket at
``datasets/<dataset>/models/churn.py``. Each run pins the generation it trains with and
the SHA-256 of its bytes (``cascade.core.model_modules``). The command acts on the
local cloud by default; ``--from-env`` uses the ``CASCADE_*`` settings of a real
project.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
from google.api_core.exceptions import GoogleAPIError
from rich.console import Console
from rich.markup import escape

from cascade.core.clients import make_storage_client
from cascade.core.errors import CascadeError
from cascade.core.model_modules import (
    MAX_MODULE_BYTES,
    pinned_uri,
    push_model_module,
    source_problem,
)
from cascade.core.settings import load_settings
from cascade.core.store import ArtifactStore
from cascade.localcloud import control
from cascade.localcloud.local_settings import LocalCloudSettings

__all__ = ["model_module"]

console = Console()


def _artifacts(from_env: bool) -> ArtifactStore:
    """The artifacts bucket of the local cloud, or of the project ``CASCADE_*`` names."""
    if from_env:
        settings = load_settings()
    else:
        local = LocalCloudSettings().absolute()
        if control.status(local) is None:
            _fail("local cloud is not running (start it with `cascade up`, or use --from-env)")
        settings = local.runtime_settings()
    return ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    sys.exit(1)


@click.group("model-module")
def model_module() -> None:
    """Store a dataset's model code (training.model: custom; docs/trainer.md)."""


@model_module.command("push")
@click.argument("dataset")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--name",
    default=None,
    help="Object name under datasets/<dataset>/, as training.model_module names it "
    "[default: models/<file name>].",
)
@click.option("--from-env", is_flag=True, help="Use CASCADE_* settings (a real project).")
def push(dataset: str, file: Path, name: str | None, from_env: bool) -> None:
    """Check FILE (UTF-8 Python, at most 1 MiB) and store it as DATASET's model module.

    Prints the object's URI, its generation and the SHA-256 of its bytes: what a run
    submitted now pins.
    """
    name = name if name is not None else f"models/{file.name}"
    size = file.stat().st_size
    if size > MAX_MODULE_BYTES:
        _fail(f"{file}: is {size} bytes; a model module is at most {MAX_MODULE_BYTES} (1 MiB)")
    data = file.read_bytes()
    problem = source_problem(data)
    if problem is not None:
        _fail(f"{file} {problem}")
    try:
        pushed = push_model_module(_artifacts(from_env), dataset, name, data)
    except (CascadeError, GoogleAPIError) as error:
        _fail(str(error))
    console.print(f"stored {escape(pinned_uri(pushed))}", highlight=False, soft_wrap=True)
    console.print(f"  uri         {escape(pushed.uri)}", highlight=False, soft_wrap=True)
    console.print(f"  generation  {pushed.generation}", highlight=False, soft_wrap=True)
    console.print(f"  sha256      {pushed.sha256}", highlight=False, soft_wrap=True)
    console.print(
        f"  use it with training.model: custom, training.model_module: {escape(name)}",
        highlight=False,
        soft_wrap=True,
    )
