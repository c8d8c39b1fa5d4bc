"""The in-memory StepContext the validate-step tests run on: one fake storage client
behind the artifacts store and every other bucket's store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from cascade.core.claims import ClaimStore
from cascade.core.context import StepContext
from cascade.core.fakes import RecordingBus
from cascade.core.runs import RunLedger
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from tests.unit.validation.fake_storage import FakeStorageClient

LANDING, ARTIFACTS = "cascade-landing", "cascade-artifacts"


def validate_step_context(storage: FakeStorageClient, clock: Callable[[], datetime]) -> StepContext:
    artifacts = ArtifactStore(storage, ARTIFACTS)  # type: ignore[arg-type]
    return StepContext(
        settings=Settings(
            landing_bucket=LANDING, artifacts_bucket=ARTIFACTS, function_timeout_s=60
        ),
        artifacts=artifacts,
        ledger=RunLedger(artifacts),
        claims=ClaimStore(artifacts),
        bus=RecordingBus(),
        clock=clock,
        open_store=lambda bucket: ArtifactStore(storage, bucket),  # type: ignore[arg-type]
    )
