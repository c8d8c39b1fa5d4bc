"""How often the validate step downloads the file it validates.

The step reads a landed file more than once (its digest, its header, its rows). A file
no larger than one streaming request is fetched once and read again from memory; a
larger one is streamed on every read, never held whole. Both give the same verdict and
the same statistics.
"""

from __future__ import annotations

import pytest

import cascade.steps.validate as validate_step
from cascade.core.events import StorageObjectEvent
from cascade.core.paths import RunPaths
from cascade.core.runs import run_id_for_object
from cascade.steps.validate import handle_object_finalized
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context
from tests.unit.validation.test_validate_step import _csv

LANDING, DATASET = "cascade-landing", "credit"
NAME = f"{DATASET}/day-1.csv"
DATA = _csv(1, rows=300)


def _validated(clock: Clock) -> tuple[FakeStorageClient, bytes]:
    """Validate ``DATA`` on a fresh store: the store, and the statistics written."""
    storage = FakeStorageClient()
    ctx = validate_step_context(storage, clock)
    generation = storage.put(LANDING, NAME, DATA)
    event = StorageObjectEvent(
        event_id="e1", bucket=LANDING, name=NAME, generation=generation, size=len(DATA)
    )
    outcome = handle_object_finalized(ctx, event)
    assert outcome is not None
    assert outcome.state == "succeeded"
    run = RunPaths(run_id_for_object(DATASET, LANDING, NAME, generation))
    stored = ctx.artifacts.read(f"{run.step_dir('validation')}/stats.pb")
    assert stored is not None
    return storage, stored.data


def test_a_small_file_is_downloaded_once(clock: Clock) -> None:
    assert len(DATA) <= validate_step.READ_CHUNK_BYTES

    storage, _ = _validated(clock)

    assert storage.downloads.count(NAME) == 1


def test_a_file_larger_than_one_request_is_streamed_with_the_same_statistics(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, held = _validated(clock)
    monkeypatch.setattr(validate_step, "READ_CHUNK_BYTES", len(DATA) - 1)

    storage, streamed = _validated(clock)

    assert storage.downloads.count(NAME) >= 3  # digest, header, rows: each its own stream
    assert streamed == held
