"""Trainer test fixtures: gs:// served by in-memory artifact stores, a recording bus."""

from __future__ import annotations

import pytest

from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.trainer.storage import TrainerStorage


class MemoryBuckets:
    """One ``MemoryArtifactStore`` per bucket name, created on first use."""

    def __init__(self) -> None:
        self.stores: dict[str, MemoryArtifactStore] = {}

    def __call__(self, bucket: str) -> MemoryArtifactStore:
        return self.stores.setdefault(bucket, MemoryArtifactStore(bucket))


@pytest.fixture
def buckets() -> MemoryBuckets:
    return MemoryBuckets()


@pytest.fixture
def storage(buckets: MemoryBuckets) -> TrainerStorage:
    return TrainerStorage(buckets)


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()
