"""The settings a command runs with: the running local cloud's, or (``--from-env``) the
environment's, as on Google Cloud."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from cascade.core.settings import Settings, load_settings
from cascade.localcloud.control import LocalCloudError, running_settings
from cascade.localcloud.local_settings import LocalCloudSettings

__all__ = ["command_settings", "fail"]


def fail(console: Console, message: str) -> None:
    """Print ``message`` as the command's error and exit 1."""
    console.print(f"[red]error:[/red] {escape(message)}")
    sys.exit(1)


def command_settings(from_env: bool, console: Console) -> Settings:
    """``--from-env``: the environment's; else the running local cloud's (an error
    naming `cascade up` when none runs)."""
    if from_env:
        return load_settings()
    try:
        return running_settings(LocalCloudSettings())
    except LocalCloudError as error:
        fail(console, str(error))
        raise  # unreachable: fail exits
