"""A rejected file's quarantine copy: the exact generation the event named, byte for byte.

The validate step copies a rejected object (server side) to
``quarantine/<dataset>/<run_id>/<basename>`` with its anomalies beside it. The copy names
the source generation, so an overwrite that lands while the file is being judged never
puts the newer bytes in quarantine under the older upload's run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from google.protobuf import text_format

from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert
from cascade.core.paths import DatasetPaths
from cascade.core.protocols import StorageBlob, StorageBucket
from cascade.core.runs import run_id_for_object
from cascade.steps.validate import handle_object_finalized
from cascade.validation.tfmd import anomalies_pb2
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeBucket, FakeStorageClient
from tests.unit.validation.step_context import validate_step_context
from tests.unit.validation.test_validate_step import _csv

LANDING, ARTIFACTS, DATASET = "cascade-landing", "cascade-artifacts", "credit"
DRIFTED = _csv(3, shift=30.0, cities=("a", "b", "z", "y"), columns=("amount", "city", "extra"))


@dataclass(frozen=True)
class CopyCall:
    source: str
    destination_bucket: str
    new_name: str
    source_generation: int | None


@dataclass
class CopyLog:
    calls: list[CopyCall] = field(default_factory=list)
    before_copy: Callable[[], None] | None = None


class RecordingBucket(FakeBucket):
    """The fake bucket, recording each server-side copy (and the generation it names)."""

    def __init__(self, client: FakeStorageClient, name: str, log: CopyLog) -> None:
        super().__init__(client, name)
        self.log = log

    def copy_blob(
        self,
        blob: StorageBlob,
        destination_bucket: StorageBucket,
        new_name: str,
        source_generation: int | None = None,
    ) -> StorageBlob:
        assert isinstance(destination_bucket, FakeBucket)
        self.log.calls.append(
            CopyCall(blob.name, destination_bucket.name, new_name, source_generation)
        )
        if self.log.before_copy is not None:
            self.log.before_copy()
        return super().copy_blob(blob, destination_bucket, new_name, source_generation)


@pytest.fixture
def copies() -> CopyLog:
    return CopyLog()


@pytest.fixture
def storage(copies: CopyLog) -> FakeStorageClient:
    client = FakeStorageClient()
    client.buckets[LANDING] = RecordingBucket(client, LANDING, copies)
    return client


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


def _land(storage: FakeStorageClient, name: str, data: bytes) -> StorageObjectEvent:
    generation = storage.put(LANDING, name, data)
    return StorageObjectEvent(
        event_id=f"event-{generation}",
        bucket=LANDING,
        name=name,
        generation=generation,
        size=len(data),
    )


def _alerts(ctx: StepContext) -> list[Alert]:
    assert isinstance(ctx.bus, RecordingBus)
    return [message for message in ctx.bus.published if isinstance(message, Alert)]


def _with_a_baseline(ctx: StepContext, storage: FakeStorageClient) -> None:
    outcome = handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))
    assert outcome is not None
    assert outcome.state == "succeeded"


def test_a_rejected_file_is_copied_to_quarantine_from_the_generation_its_event_named(
    ctx: StepContext, storage: FakeStorageClient, copies: CopyLog
) -> None:
    _with_a_baseline(ctx, storage)
    event = _land(storage, f"{DATASET}/day-2.csv", DRIFTED)

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.state == "rejected"
    run_id = run_id_for_object(DATASET, LANDING, event.name, event.generation)
    prefix = DatasetPaths(DATASET).quarantine(run_id)
    assert prefix == f"quarantine/{DATASET}/{run_id}"
    assert copies.calls == [
        CopyCall(event.name, ARTIFACTS, f"{prefix}/day-2.csv", event.generation)
    ]
    quarantined = storage.bucket(ARTIFACTS).objects[f"{prefix}/day-2.csv"]
    assert quarantined.data == DRIFTED
    anomalies = storage.bucket(ARTIFACTS).objects[f"{prefix}/anomalies.pbtxt"]
    parsed = text_format.Parse(anomalies.data.decode(), anomalies_pb2.Anomalies())
    assert set(parsed.anomaly_info) >= {"age", "city", "amount"}
    assert outcome.outputs["quarantine"] == f"gs://{ARTIFACTS}/{prefix}"
    [alert] = _alerts(ctx)
    assert alert.details["quarantine"] == f"gs://{ARTIFACTS}/{prefix}"


def test_an_overwrite_while_judging_never_puts_the_newer_bytes_in_quarantine(
    ctx: StepContext, storage: FakeStorageClient, copies: CopyLog
) -> None:
    _with_a_baseline(ctx, storage)
    event = _land(storage, f"{DATASET}/day-2.csv", DRIFTED)
    newer = _csv(4)
    copies.before_copy = lambda: storage.bucket(LANDING).blob(event.name).upload_from_string(newer)

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.run_state == "failed"
    assert "no longer exists" in outcome.summary
    run_id = run_id_for_object(DATASET, LANDING, event.name, event.generation)
    prefix = DatasetPaths(DATASET).quarantine(run_id)
    held = [name for name in storage.bucket(ARTIFACTS).objects if name.startswith(prefix)]
    assert held == []
    assert storage.bucket(LANDING).objects[event.name].data == newer
