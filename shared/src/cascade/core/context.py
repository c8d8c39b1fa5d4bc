"""Everything a step needs, built once per function instance and passed down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import google.cloud.storage as storage

from cascade.core.bus import MessageBus
from cascade.core.claims import ClaimStore
from cascade.core.clients import make_publisher, make_storage_client
from cascade.core.runs import RunLedger
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore

__all__ = ["StepContext", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class StepContext:
    settings: Settings
    storage_client: storage.Client
    artifacts: ArtifactStore
    ledger: RunLedger
    claims: ClaimStore
    bus: MessageBus
    clock: Callable[[], datetime] = field(default=utc_now)
    landing: ArtifactStore | None = None

    @property
    def claim_lease(self) -> timedelta:
        """A claim outlives its owner's last heartbeat by at most this (runner renews it)."""
        return timedelta(seconds=self.settings.claim_lease_s)

    def landing_store(self) -> ArtifactStore:
        if self.landing is None:
            self.landing = ArtifactStore(self.storage_client, self.settings.landing_bucket)
        return self.landing

    @classmethod
    def from_settings(cls, settings: Settings) -> StepContext:
        """Real clients for ``settings`` (the emulators when their hosts are set)."""
        storage_client = make_storage_client(settings)
        artifacts = ArtifactStore(storage_client, settings.artifacts_bucket)
        return cls(
            settings=settings,
            storage_client=storage_client,
            artifacts=artifacts,
            ledger=RunLedger(artifacts, max_attempts=settings.run_update_attempts),
            claims=ClaimStore(artifacts),
            bus=MessageBus(make_publisher(settings), settings),
        )
