"""An object uploaded again under the same name is a new upload: a new generation, a run of
its own. A redelivered event for one generation stays that generation's run.

The run id derives from bucket, name *and* generation, so an overwrite never resumes,
or is absorbed as a duplicate of, the run of the bytes it replaced. Identical bytes
under a new generation get a run of their own too, accepted as a duplicate (the
content index ``accepted-content/<sha256>.json`` keeps them from being merged twice).
"""

from __future__ import annotations

import pytest

from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import DataValidated
from cascade.core.runs import RunRecord, run_id_for_object
from cascade.steps.validate import handle_object_finalized
from cascade.validation.baseline_store import BaselineStore
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context
from tests.unit.validation.test_validate_step import _csv

LANDING, DATASET = "cascade-landing", "credit"
NAME = f"{DATASET}/day-1.csv"


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


def _upload(storage: FakeStorageClient, data: bytes) -> StorageObjectEvent:
    generation = storage.put(LANDING, NAME, data)
    return StorageObjectEvent(
        event_id=f"event-{generation}",
        bucket=LANDING,
        name=NAME,
        generation=generation,
        size=len(data),
    )


def _validated(ctx: StepContext) -> list[DataValidated]:
    assert isinstance(ctx.bus, RecordingBus)
    return [m for m in ctx.bus.published if isinstance(m, DataValidated)]


def _runs(ctx: StepContext) -> list[RunRecord]:
    names = [name for name in ctx.artifacts.list_names("runs/") if name.endswith("/run.json")]
    found = [ctx.ledger.get(name.split("/")[1]) for name in names]
    return [run for run in found if run is not None]


def test_an_overwrite_with_new_content_is_a_new_run_of_its_own_generation(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    first = _upload(storage, _csv(1))
    handle_object_finalized(ctx, first)
    second = _upload(storage, _csv(2, rows=400))  # same name, new bytes, new generation
    assert second.generation != first.generation

    outcome = handle_object_finalized(ctx, second)

    assert outcome is not None
    assert outcome.state == "succeeded"
    first_run = run_id_for_object(DATASET, LANDING, NAME, first.generation)
    second_run = run_id_for_object(DATASET, LANDING, NAME, second.generation)
    assert first_run != second_run
    assert [(m.run_id, m.source.generation) for m in _validated(ctx)] == [
        (first_run, first.generation),
        (second_run, second.generation),
    ]
    runs = {run.run_id: run for run in _runs(ctx)}
    assert set(runs) == {first_run, second_run}
    assert runs[second_run].trigger.generation == second.generation
    assert runs[second_run].trigger.uri == f"gs://{LANDING}/{NAME}"
    assert runs[second_run].steps["validate"].state == "succeeded"
    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    assert (stored.files, stored.summary.num_examples) == (2, 1000)


def test_a_redelivered_event_of_the_new_generation_is_the_same_run(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    handle_object_finalized(ctx, _upload(storage, _csv(1)))
    second = _upload(storage, _csv(2, rows=400))
    handle_object_finalized(ctx, second)

    again = handle_object_finalized(ctx, second.model_copy(update={"event_id": "redelivered"}))

    assert again is None  # the run's validate step is done: a duplicate delivery
    assert len(_runs(ctx)) == 2
    assert len(_validated(ctx)) == 2
    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    assert stored.files == 2


def test_a_late_event_for_the_replaced_generation_fails_its_own_run_only(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    """The first upload's event arrives after the overwrite: its generation is gone, so
    its run fails; the overwrite's run is untouched and still validates its bytes."""
    first = _upload(storage, _csv(1))
    second = _upload(storage, _csv(2, rows=400))

    late = handle_object_finalized(ctx, first)
    current = handle_object_finalized(ctx, second)

    assert late is not None
    assert late.run_state == "failed"
    assert "no longer exists" in late.summary
    assert current is not None
    assert current.state == "succeeded"
    runs = {run.run_id: run.state for run in _runs(ctx)}
    assert runs == {
        run_id_for_object(DATASET, LANDING, NAME, first.generation): "failed",
        run_id_for_object(DATASET, LANDING, NAME, second.generation): "running",
    }
    [validated] = _validated(ctx)
    assert validated.source.generation == second.generation


def test_identical_bytes_uploaded_again_are_a_new_run_accepted_as_a_duplicate(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    data = _csv(1)
    first = _upload(storage, data)
    handle_object_finalized(ctx, first)
    again = _upload(storage, data)  # same name, same bytes, new generation

    outcome = handle_object_finalized(ctx, again)

    first_run = run_id_for_object(DATASET, LANDING, NAME, first.generation)
    again_run = run_id_for_object(DATASET, LANDING, NAME, again.generation)
    assert first_run != again_run
    assert outcome is not None
    assert outcome.state == "succeeded"
    assert outcome.outputs["duplicate_of"] == first_run
    assert [m.run_id for m in _validated(ctx)] == [first_run, again_run]
    assert {run.run_id for run in _runs(ctx)} == {first_run, again_run}
    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    assert stored.files == 1  # the same bytes are not merged twice
