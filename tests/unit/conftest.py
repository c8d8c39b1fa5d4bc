"""Unit-test fixtures: a StepContext over in-memory fakes and a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cascade.core.claims import ClaimStore
from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.runs import RunLedger
from cascade.core.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def step_context(clock: Clock) -> StepContext:
    return memory_step_context(clock, Settings(function_timeout_s=60))


def memory_step_context(clock: Clock, settings: Settings) -> StepContext:
    """A StepContext over an in-memory bucket and a recording bus."""
    artifacts = MemoryArtifactStore("cascade-artifacts")
    return StepContext(
        settings=settings,
        artifacts=artifacts,
        ledger=RunLedger(artifacts),
        claims=ClaimStore(artifacts),
        bus=RecordingBus(),
        clock=clock,
    )
