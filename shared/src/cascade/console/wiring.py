"""The console's clients, built once from ``Settings`` (the environment on Cloud Run,
the running local cloud's settings under ``cascade console``)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from cascade.console.actions import Caller
from cascade.console.app import ConsoleConfig
from cascade.core.bus import MessageBus
from cascade.core.clients import make_publisher, make_storage_client
from cascade.core.run_index import BucketLister
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore

__all__ = ["console_config"]


def console_config(settings: Settings, caller_of: Callable[[Request], Caller]) -> ConsoleConfig:
    """Reads through the artifacts bucket of ``settings``; publishes with its project."""
    client = make_storage_client(settings)
    artifacts = ArtifactStore(
        client, settings.artifacts_bucket, update_attempts=settings.run_update_attempts
    )
    return ConsoleConfig(
        artifacts=artifacts,
        lister=BucketLister(client, settings.artifacts_bucket),
        bus=lambda: MessageBus(make_publisher(settings), settings),
        caller_of=caller_of,
    )
