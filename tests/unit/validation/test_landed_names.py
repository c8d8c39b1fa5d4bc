"""Which objects validate reads and under which run (issue 13, defects 2b, 7 and 8b).

Every landed object gets a run record; only the landing bucket is read; a refused name
is recorded (failed, with the reason) under the ``invalid-uploads`` pseudo-dataset and
never under a dataset derived from a cleaned-up name; an identical re-upload is not
merged into the baseline twice.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cascade.cli.status import latest_runs, run_rows
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, DataValidated
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord, run_id_for_object
from cascade.steps.reconcile import reconcile
from cascade.steps.validate import dataset_of_object, handle_object_finalized
from cascade.transform.snapshot import accepted_files
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.manifest import AcceptedFile
from cascade.validation.names import INVALID_NAMES_DATASET, normalised_alias
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context
from tests.unit.validation.test_validate_step import _csv

LANDING, ARTIFACTS, DATASET = "cascade-landing", "cascade-artifacts", "credit"
STALE = timedelta(minutes=10)


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


def _land(
    storage: FakeStorageClient, name: str, data: bytes, bucket: str = LANDING
) -> StorageObjectEvent:
    generation = storage.put(bucket, name, data)
    return StorageObjectEvent(
        event_id=f"event-{generation}",
        bucket=bucket,
        name=name,
        generation=generation,
        size=len(data),
    )


def _bus(ctx: StepContext) -> RecordingBus:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus


def _run_of(ctx: StepContext, event: StorageObjectEvent, dataset: str) -> RunRecord | None:
    return ctx.ledger.get(run_id_for_object(dataset, event.bucket, event.name, event.generation))


def _all_runs(ctx: StepContext) -> list[str]:
    return [name for name in ctx.artifacts.list_names("runs/") if name.endswith("/run.json")]


# -- defect 7: only the landing bucket; every landed object gets a run ---------------------


def test_an_event_for_another_bucket_is_refused_without_a_run(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    event = _land(storage, f"{DATASET}/day-1.csv", _csv(1), bucket=ARTIFACTS)

    with pytest.raises(BadRequestError, match="only the landing bucket"):
        handle_object_finalized(ctx, event)

    assert _all_runs(ctx) == []
    assert BaselineStore(ctx.artifacts, DATASET).load() is None
    assert _bus(ctx).published == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("stray.csv", "bucket's root"),
        ("Credit/day-1.csv", "not a dataset name"),
        ("9lives/day-1.csv", "not a dataset name"),
        (f"{INVALID_NAMES_DATASET}/day-1.csv", "reserved"),
    ],
)
def test_an_object_outside_a_dataset_folder_gets_a_failed_run_that_status_shows(
    ctx: StepContext, storage: FakeStorageClient, name: str, reason: str
) -> None:
    event = _land(storage, name, _csv(1))

    handle_object_finalized(ctx, event)

    run = _run_of(ctx, event, INVALID_NAMES_DATASET)
    assert run is not None
    assert run.state == "failed"
    assert reason in (run.error or "")
    assert event.uri in (run.error or "")
    [alert] = _bus(ctx).of_type(Alert)
    assert alert.run_id == run.run_id
    assert _bus(ctx).of_type(DataValidated) == []
    [row] = run_rows(latest_runs(ctx.artifacts, limit=10))
    assert row.dataset == INVALID_NAMES_DATASET
    assert row.trigger == name
    assert row.verdicts.startswith("name refused: ")
    assert reason in row.verdicts


# -- defect 2b: refused names are never read, nor derived into a dataset's run --------------


@pytest.mark.parametrize(
    "name",
    [
        "credit/../credit/a.csv",
        "credit/./a.csv",
        "credit//a.csv",
        "/credit/a.csv",
        "credit/a\\b.csv",
        "credit/a\x07.csv",
        "credit/../../../../../../elsewhere/escaped.csv",
    ],
)
def test_a_refused_name_is_recorded_failed_and_never_validated(
    ctx: StepContext, storage: FakeStorageClient, name: str
) -> None:
    event = _land(storage, name, _csv(1))

    handle_object_finalized(ctx, event)

    assert _run_of(ctx, event, DATASET) is None
    run = _run_of(ctx, event, INVALID_NAMES_DATASET)
    assert run is not None
    assert run.state == "failed"
    assert "object name" in (run.error or "")
    assert BaselineStore(ctx.artifacts, DATASET).load() is None
    assert _bus(ctx).of_type(DataValidated) == []
    assert dataset_of_object(name) == INVALID_NAMES_DATASET


def test_reconcile_derives_no_run_from_the_emulators_cleaned_name(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    refused = _land(storage, "credit/../credit/a.csv", _csv(1))
    handle_object_finalized(ctx, refused)
    # fake-gcs-server keeps the object at the cleaned path and lists it under that name
    objects = storage.bucket(LANDING).objects
    objects["credit/a.csv"] = objects.pop("credit/../credit/a.csv")
    objects["credit/a.csv"].updated = clock.now - 2 * STALE
    runs_before = _all_runs(ctx)

    report = reconcile(ctx, stale_after=STALE)

    assert report.uploads_started == []
    assert report.aliases_skipped == [f"gs://{LANDING}/credit/a.csv"]
    assert _all_runs(ctx) == runs_before
    assert BaselineStore(ctx.artifacts, DATASET).load() is None
    assert _bus(ctx).of_type(DataValidated) == []


def test_reconcile_records_a_refused_name_that_lost_its_event_as_failed(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    lost = _land(storage, "credit//a.csv", _csv(1))
    storage.bucket(LANDING).objects[lost.name].updated = clock.now - 2 * STALE

    report = reconcile(ctx, stale_after=STALE)

    run = _run_of(ctx, lost, INVALID_NAMES_DATASET)
    assert run is not None
    assert report.uploads_started == [run.run_id]
    assert run.state == "failed"
    assert "empty" in (run.error or "")
    assert BaselineStore(ctx.artifacts, DATASET).load() is None


def test_a_cleaned_name_of_a_different_generation_is_an_upload_of_its_own(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    refused = _land(storage, "credit/./a.csv", _csv(1))
    handle_object_finalized(ctx, refused)
    real = _land(storage, "credit/a.csv", _csv(2))
    storage.bucket(LANDING).objects[real.name].updated = clock.now - 2 * STALE

    report = reconcile(ctx, stale_after=STALE)

    assert report.aliases_skipped == []
    assert report.uploads_started == [
        run_id_for_object(DATASET, LANDING, real.name, real.generation)
    ]


def test_normalised_alias_is_what_a_path_cleaning_store_keeps() -> None:
    assert normalised_alias("credit/../credit/a.csv") == "credit/a.csv"
    assert normalised_alias("credit//a.csv") == "credit/a.csv"
    assert normalised_alias("/credit/./a.csv") == "credit/a.csv"
    assert normalised_alias("credit/a.csv") is None
    assert normalised_alias("credit/../../x.csv") is None


# -- defect 8b: an identical re-upload is not merged again --------------------------------


def test_an_identical_re_upload_is_accepted_as_a_duplicate_and_not_merged_again(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    data = _csv(1)
    first = _land(storage, f"{DATASET}/day-1.csv", data)
    handle_object_finalized(ctx, first)
    clock.advance(1)  # accepted after the first (same-time manifests sort by file id)
    again = _land(storage, f"{DATASET}/day-1.csv", data)  # same bytes, new generation

    outcome = handle_object_finalized(ctx, again)

    assert outcome is not None
    assert outcome.state == "succeeded"
    assert "duplicate" in outcome.summary
    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    assert stored.files == 1
    assert stored.summary.num_examples == 600
    run = _run_of(ctx, again, DATASET)
    first_run = _run_of(ctx, first, DATASET)
    assert run is not None
    assert first_run is not None
    assert run.steps["validate"].state == "succeeded"
    assert run.steps["validate"].outputs["duplicate_of"] == first_run.run_id
    # the chain goes on, as for any accepted file (a re-upload asks for a run)
    assert [m.run_id for m in _bus(ctx).of_type(DataValidated)] == [
        first_run.run_id,
        run.run_id,
    ]
    # the first generation is gone (overwritten): the duplicate stands in for it
    files = accepted_files(ctx.artifacts, DATASET)
    assert [(f.generation, f.duplicate_of) for f in files] == [
        (first.generation, None),
        (again.generation, first_run.run_id),
    ]


def test_identical_bytes_under_another_name_are_neither_merged_nor_trained_twice(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    data = _csv(1)
    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", data))
    copy = _land(storage, f"{DATASET}/day-1-copy.csv", data)

    outcome = handle_object_finalized(ctx, copy)
    redelivered = handle_object_finalized(ctx, copy.model_copy(update={"event_id": "again"}))

    assert outcome is not None
    assert "duplicate" in outcome.summary
    assert redelivered is None
    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    assert stored.files == 1
    assert len(accepted_files(ctx.artifacts, DATASET)) == 1  # trained on once
    assert len(_bus(ctx).of_type(DataValidated)) == 2


def test_a_changed_file_under_the_same_name_is_merged(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))

    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(2, rows=400)))

    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    assert stored.files == 2
    manifests = ctx.artifacts.list_names(DatasetPaths(DATASET).accepted_prefix)
    assert all(
        (ctx.artifacts.read_model(name, AcceptedFile) or (None,))[0] is not None
        for name in manifests
    )
    assert len(_bus(ctx).of_type(DataValidated)) == 2


def test_a_duplicate_resumed_after_a_crash_is_still_not_merged(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    data = _csv(1)
    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", data))
    again = _land(storage, f"{DATASET}/day-1.csv", data)
    handle_object_finalized(ctx, again)
    run_id = run_id_for_object(DATASET, LANDING, again.name, again.generation)
    ctx.artifacts.delete(f"runs/{run_id}/claims/validate.json")  # as if it never finished
    ctx.artifacts.delete(f"runs/{run_id}/results/validate.json")

    outcome = handle_object_finalized(ctx, again.model_copy(update={"event_id": "retry"}))

    assert outcome is not None
    assert "duplicate" in outcome.summary
    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    assert stored.files == 1
    assert len(accepted_files(ctx.artifacts, DATASET)) == 2  # the gone original, its stand-in
