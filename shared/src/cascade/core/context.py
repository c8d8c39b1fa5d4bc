"""Everything a step needs, built once per function instance and passed down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from cascade.core.bus import MessageBus
from cascade.core.claims import ClaimStore
from cascade.core.clients import make_publisher, make_storage_client
from cascade.core.runs import RunLedger
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore

__all__ = ["StepContext", "StoreOpener", "utc_now"]

StoreOpener = Callable[[str], ArtifactStore]
"""Opens the store of a bucket, by the bucket's name."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class StepContext:
    """Settings, stores, run ledger, claims and bus: what a step works with.

    Steps reach buckets only through stores: ``artifacts``, ``landing_store()``, and
    ``store(bucket)`` for a bucket named by an event or a URI.
    """

    settings: Settings
    artifacts: ArtifactStore
    ledger: RunLedger
    claims: ClaimStore
    bus: MessageBus
    clock: Callable[[], datetime] = field(default=utc_now)
    landing: ArtifactStore | None = None
    open_store: StoreOpener | None = None
    """Opens the store of any other bucket; None where a step needs no other bucket."""

    @property
    def claim_lease(self) -> timedelta:
        """A claim outlives its owner's last heartbeat by at most this (runner renews it)."""
        return timedelta(seconds=self.settings.claim_lease_s)

    def landing_store(self) -> ArtifactStore:
        """The landing bucket's store (opened on first use)."""
        if self.landing is None:
            self.landing = self._open(self.settings.landing_bucket)
        return self.landing

    def store(self, bucket: str) -> ArtifactStore:
        """The store of ``bucket``: the artifacts or landing store when it is theirs."""
        if bucket == self.artifacts.bucket_name:
            return self.artifacts
        if self.landing is not None and bucket == self.landing.bucket_name:
            return self.landing
        if bucket == self.settings.landing_bucket:
            return self.landing_store()
        return self._open(bucket)

    def _open(self, bucket: str) -> ArtifactStore:
        if self.open_store is None:
            raise LookupError(f"this StepContext opens no store for bucket {bucket!r}")
        return self.open_store(bucket)

    @classmethod
    def from_settings(cls, settings: Settings) -> StepContext:
        """Real clients for ``settings`` (the emulators when their hosts are set)."""
        storage_client = make_storage_client(settings)
        open_store: StoreOpener = partial(
            ArtifactStore, storage_client, update_attempts=settings.run_update_attempts
        )
        artifacts = open_store(settings.artifacts_bucket)
        return cls(
            settings=settings,
            artifacts=artifacts,
            ledger=RunLedger(artifacts),
            claims=ClaimStore(artifacts),
            bus=MessageBus(make_publisher(settings), settings),
            open_store=open_store,
        )
