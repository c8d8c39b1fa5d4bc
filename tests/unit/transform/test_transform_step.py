"""The transform step: snapshot with lineage, deterministic shards, a train request
(on every file, or only on value skews: ``training.retrain_on``)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.job_spec import TrainingJobSpec
from cascade.core.messages import Alert, DataValidated, ObjectRef, RunEnded, TrainRequest
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord, Trigger
from cascade.jobs.records import job_spec_name
from cascade.serving.state import DeployedVersion, ServingState, update_serving_state
from cascade.steps.transform import handle_data_validated
from cascade.transform.catalog import (
    latest_transform,
    read_transform,
    snapshot_name,
    transform_spec_name,
)
from cascade.transform.snapshot import DataSnapshot
from cascade.validation.manifest import ValueSkew
from tests.unit.transform.landing import MemoryLanding, accept, write_pipeline_config

DATASET = "credit"
CONFIG = "label: defaulted\nproblem_type: binary\n"


@pytest.fixture
def landing() -> MemoryLanding:
    return MemoryLanding()


def _store(ctx: StepContext) -> MemoryArtifactStore:
    assert isinstance(ctx.artifacts, MemoryArtifactStore)
    return ctx.artifacts


def _bus(ctx: StepContext) -> RecordingBus:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus


def _validated(ctx: StepContext, run_id: str, generation: int = 1) -> DataValidated:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    ctx.ledger.ensure(
        RunRecord(
            run_id=run_id,
            dataset=DATASET,
            trigger=Trigger(kind="object"),
            created_at=now,
            updated_at=now,
        )
    )
    source = ObjectRef(bucket="cascade-landing", name=f"{DATASET}/f.csv", generation=generation)
    return DataValidated(dataset=DATASET, run_id=run_id, source=source)


def _rows(ctx: StepContext, uris: list[str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for uri in uris:
        stored = ctx.artifacts.read(uri.removeprefix("gs://cascade-artifacts/"))
        assert stored is not None
        rows.extend(pq.read_table(io.BytesIO(stored.data)).to_pylist())
    return rows


def test_transform_writes_shards_spec_and_lineage_then_asks_for_training(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=1), generation=11)
    accept(store, landing, DATASET, "day-2.csv", sample_csv(200, seed=2), generation=22, order=1)

    outcome = handle_data_validated(
        step_context, _validated(step_context, "credit-run1"), event_id="e1", opener=landing
    )

    assert outcome is not None
    assert outcome.state == "succeeded", outcome
    spec = read_transform(store, "credit-run1")
    assert spec is not None
    assert [(f.uri.rsplit("/", 1)[-1], f.generation) for f in spec.snapshot] == [
        ("day-1.csv", 11),
        ("day-2.csv", 22),
    ]
    assert spec.train_rows + spec.eval_rows == 500
    assert 50 < spec.eval_rows < 150
    assert spec.label.classes == ["0", "1"]
    assert "customer_id" in spec.feature_names  # not excluded by this config
    train, evaluation = _rows(step_context, spec.train_files), _rows(step_context, spec.eval_files)
    assert len(train) == spec.train_rows
    assert len(evaluation) == spec.eval_rows
    assert all(isinstance(row["defaulted"], str) for row in train)
    assert all(isinstance(row["age"], float) for row in train)
    run = step_context.ledger.get("credit-run1")
    assert run is not None
    assert run.lineage["snapshot"] == [
        "gs://cascade-landing/credit/day-1.csv#11",
        "gs://cascade-landing/credit/day-2.csv#22",
    ]
    assert run.lineage["transform_fingerprint"] == spec.fingerprint()
    (request,) = _bus(step_context).of_type(TrainRequest)
    assert isinstance(request, TrainRequest)
    assert (request.run_id, request.request_id) == ("credit-run1", "run:credit-run1")
    pointer = latest_transform(store, DATASET)
    assert pointer is not None
    assert pointer.run_id == "credit-run1"


def test_redelivery_is_a_no_op_and_a_rerun_writes_identical_shards(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(400, seed=3), generation=5)
    handle_data_validated(
        step_context, _validated(step_context, "credit-a"), event_id="e1", opener=landing
    )
    reads = len(landing.opened)

    again = handle_data_validated(
        step_context,
        _validated(step_context, "credit-a"),
        event_id="e1-redelivered",
        opener=landing,
    )
    handle_data_validated(
        step_context, _validated(step_context, "credit-b"), event_id="e2", opener=landing
    )

    assert again is None
    assert len(landing.opened) == 2 * reads  # only run b read the data again
    first, second = read_transform(store, "credit-a"), read_transform(store, "credit-b")
    assert first is not None
    assert second is not None
    assert first.fingerprint() == second.fingerprint()
    for a_uri, b_uri in zip(
        first.train_files + first.eval_files, second.train_files + second.eval_files, strict=True
    ):
        a = store.read(a_uri.removeprefix("gs://cascade-artifacts/"))
        b = store.read(b_uri.removeprefix("gs://cascade-artifacts/"))
        assert a is not None
        assert b is not None
        assert a.data == b.data
    assert len(_bus(step_context).of_type(TrainRequest)) == 2


def test_a_resumed_transform_reuses_its_snapshot(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=1), generation=1)
    now = datetime(2026, 11, 27, tzinfo=UTC)
    accept(store, landing, DATASET, "day-2.csv", sample_csv(300, seed=2), generation=2, order=1)
    store.write_json(  # a crashed first attempt stored the snapshot before day-2 arrived
        snapshot_name("credit-r"),
        DataSnapshot.model_validate(
            {
                "dataset": DATASET,
                "run_id": "credit-r",
                "created_at": now,
                "files": [
                    {"uri": "gs://cascade-landing/credit/day-1.csv", "generation": 1, "rows": 300}
                ],
            }
        ),
    )

    handle_data_validated(
        step_context, _validated(step_context, "credit-r"), event_id="e", opener=landing
    )

    spec = read_transform(store, "credit-r")
    assert spec is not None
    assert [f.generation for f in spec.snapshot] == [1]
    assert spec.train_rows + spec.eval_rows == 300


def test_a_generation_that_no_longer_exists_is_skipped_and_listed(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(200, seed=1), generation=1)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(250, seed=4), generation=2, order=1)
    del landing.objects[("gs://cascade-landing/credit/day-1.csv", 1)]

    handle_data_validated(
        step_context, _validated(step_context, "credit-s"), event_id="e", opener=landing
    )

    stored = store.read_model(snapshot_name("credit-s"), DataSnapshot)
    assert stored is not None
    snapshot = stored[0]
    assert [f.generation for f in snapshot.files] == [2]
    assert [(s.generation, "no longer exists" in s.reason) for s in snapshot.skipped] == [(1, True)]


def test_missing_label_fails_the_run_with_an_alert_and_no_request(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    accept(
        _store(step_context), landing, DATASET, "day-1.csv", sample_csv(100, seed=1), generation=1
    )

    outcome = handle_data_validated(
        step_context, _validated(step_context, "credit-x"), event_id="e", opener=landing
    )

    assert outcome is not None
    assert outcome.state == "failed"
    run = step_context.ledger.get("credit-x")
    assert run is not None
    assert run.state == "failed"
    assert "needs `label` and `problem_type`" in (run.error or "")
    assert [type(m) for m in _bus(step_context).published] == [Alert, RunEnded]


def test_bad_values_in_a_numeric_feature_are_bad_input_naming_file_and_column(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(100, seed=1), generation=1)
    good = "age,income,defaulted\n" + "".join(f"{20 + i},{i * 10.5},{i % 2}\n" for i in range(100))
    bad = good + "abc,1.0,0\n"
    landing.put(f"{DATASET}/day-1.csv", bad.encode(), 1)

    handle_data_validated(
        step_context, _validated(step_context, "credit-b"), event_id="e", opener=landing
    )

    run = step_context.ledger.get("credit-b")
    assert run is not None
    assert run.state == "failed"
    assert "day-1.csv#1" in (run.error or "")
    assert "'age'" in (run.error or "")


SKEWED_RUN = "credit-file001"
"""The run that accepted day-2.csv: ``accept(..., order=1)`` names its manifest so."""


def _serving_model(store: MemoryArtifactStore) -> None:
    """A model already serves the dataset (the local deployer's ``serving.json``)."""
    now = datetime(2026, 11, 20, tzinfo=UTC)
    version = DeployedVersion(
        version="1", run_id="credit-old", model_uri="gs://m/1", state="serving", deployed_at=now
    )
    update_serving_state(
        store,
        DATASET,
        lambda _: ServingState(
            dataset=DATASET,
            target="local",
            endpoint=DATASET,
            versions=[version],
            traffic={"1": 100},
            updated_at=now,
        ),
    )


def _two_files(store: MemoryArtifactStore, landing: MemoryLanding, *, skewed: bool) -> None:
    """day-1 and day-2 accepted; day-2's validation found value skews when ``skewed``."""
    accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=1), generation=1)
    second = accept(
        store, landing, DATASET, "day-2.csv", sample_csv(300, seed=2), generation=2, order=1
    )
    if skewed:
        skews = [
            ValueSkew(
                check="drift",
                feature="income",
                description="The approximate Jensen-Shannon divergence ... 0.21 ...",
                measure="jensen_shannon_divergence",
                value=0.21,
                threshold=0.1,
            ),
            ValueSkew(check="missing_share", feature="age", description="Missing rose."),
        ]
        store.write_json(
            DatasetPaths(DATASET).accepted_manifest(second.file_id),
            second.model_copy(update={"value_skews": skews}),
        )


def test_a_file_with_value_skews_asks_for_training_with_a_reason_that_names_them(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    _two_files(store, landing, skewed=True)

    outcome = handle_data_validated(
        step_context, _validated(step_context, SKEWED_RUN), event_id="e", opener=landing
    )

    assert outcome is not None
    [request] = _bus(step_context).of_type(TrainRequest)
    assert request.reason.startswith(
        "value skew in credit/day-2.csv: drift in 'income' (jensen_shannon_divergence 0.21 > "
        "0.1); missing share in 'age'; transform "
    )
    run = step_context.ledger.get(SKEWED_RUN)
    assert run is not None
    assert run.steps["transform"].outputs["train_reason"] == request.reason


def test_with_retrain_on_value_skew_a_file_without_skews_is_fitted_but_does_not_train(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG + "training: {retrain_on: value_skew}\n")
    _two_files(store, landing, skewed=False)
    _serving_model(store)

    outcome = handle_data_validated(
        step_context, _validated(step_context, SKEWED_RUN), event_id="e", opener=landing
    )

    assert outcome is not None
    assert _bus(step_context).of_type(TrainRequest) == []
    run = step_context.ledger.get(SKEWED_RUN)
    assert run is not None
    assert run.state == "succeeded"
    assert (
        "credit/day-2.csv brought no value skew" in run.steps["transform"].outputs["train_request"]
    )
    spec = read_transform(store, SKEWED_RUN)
    assert spec is not None
    assert len(spec.snapshot) == 2  # refitted on all accepted data all the same
    pointer = latest_transform(store, DATASET)
    assert pointer is not None
    assert pointer.run_id == SKEWED_RUN


def test_with_retrain_on_value_skew_a_file_with_skews_asks_for_training(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG + "training: {retrain_on: value_skew}\n")
    _two_files(store, landing, skewed=True)
    _serving_model(store)

    handle_data_validated(
        step_context, _validated(step_context, SKEWED_RUN), event_id="e", opener=landing
    )

    [request] = _bus(step_context).of_type(TrainRequest)
    assert (request.run_id, request.request_id) == (SKEWED_RUN, f"run:{SKEWED_RUN}")
    assert request.reason.startswith("value skew in credit/day-2.csv: drift in 'income'")
    run = step_context.ledger.get(SKEWED_RUN)
    assert run is not None
    assert run.state == "running"  # on its way to training


def test_with_retrain_on_value_skew_a_file_trains_while_no_model_serves_the_dataset(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG + "training: {retrain_on: value_skew}\n")
    accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=1), generation=1)

    handle_data_validated(
        step_context, _validated(step_context, "credit-file000"), event_id="e", opener=landing
    )

    [request] = _bus(step_context).of_type(TrainRequest)
    assert request.reason.startswith("no model serves credit yet; transform ")


def test_the_newest_files_are_those_the_serving_model_was_not_trained_on_and_are_marked(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=1), generation=1)
    handle_data_validated(
        step_context, _validated(step_context, "credit-old"), event_id="e0", opener=landing
    )
    _serving_model(store)  # version 1 of run credit-old, trained on day-1 alone
    store.write_json(
        job_spec_name("credit-old"),
        TrainingJobSpec(
            run_id="credit-old",
            dataset=DATASET,
            display_name="cascade-train-credit-old",
            transform_spec_uri=store.uri(transform_spec_name("credit-old")),
            output_dir=store.uri("runs/credit-old/training"),
        ),
    )
    accept(store, landing, DATASET, "day-2.csv", sample_csv(200, seed=2), generation=2, order=1)
    accept(store, landing, DATASET, "day-3.csv", sample_csv(200, seed=3), generation=3, order=2)

    outcome = handle_data_validated(
        step_context, _validated(step_context, "credit-new"), event_id="e1", opener=landing
    )

    assert outcome is not None
    spec = read_transform(store, "credit-new")
    assert spec is not None
    assert [file.uri.rsplit("/", 1)[-1] for file in spec.newest_files] == ["day-2.csv", "day-3.csv"]
    assert spec.newest_column is not None
    assert spec.newest_column not in spec.feature_names
    evaluation = _rows(step_context, spec.eval_files)
    assert spec.newest_eval_rows == sum(1 for row in evaluation if row[spec.newest_column])
    assert 0 < spec.newest_eval_rows < spec.eval_rows
    run = step_context.ledger.get("credit-new")
    assert run is not None
    assert run.steps["transform"].outputs["newest_files"] == [
        "gs://cascade-landing/credit/day-2.csv#2",
        "gs://cascade-landing/credit/day-3.csv#3",
    ]


def test_while_no_model_serves_the_newest_file_is_the_last_accepted_one(
    step_context: StepContext, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=1), generation=1)
    accept(store, landing, DATASET, "day-2.csv", sample_csv(200, seed=2), generation=2, order=1)

    handle_data_validated(
        step_context, _validated(step_context, "credit-run1"), event_id="e1", opener=landing
    )

    spec = read_transform(store, "credit-run1")
    assert spec is not None
    assert [file.uri.rsplit("/", 1)[-1] for file in spec.newest_files] == ["day-2.csv"]
    train = _rows(step_context, spec.train_files)
    assert spec.newest_column is not None
    assert sum(1 for row in train if row[spec.newest_column]) + spec.newest_eval_rows == 200
