"""The validate step over an in-memory Cloud Storage: accept, reject, resume, race."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from google.protobuf import text_format

from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, DataValidated
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.store import ArtifactStore
from cascade.core.validation_config import ValidationConfig
from cascade.steps.validate import handle_object_finalized
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.manifest import AcceptedFile
from cascade.validation.schema import infer_schema
from cascade.validation.tfmd import anomalies_pb2, statistics_pb2
from tests.unit.conftest import Clock
from tests.unit.validation.builders import summary_of
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context

LANDING, ARTIFACTS, DATASET = "cascade-landing", "cascade-artifacts", "credit"


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


def _baselines(storage: FakeStorageClient) -> BaselineStore:
    return BaselineStore(ArtifactStore(storage, ARTIFACTS), DATASET)  # type: ignore[arg-type]


def _csv(
    seed: int,
    rows: int = 600,
    shift: float = 0.0,
    cities: tuple[str, ...] = ("a", "b"),
    columns: tuple[str, ...] = ("amount", "age", "city"),
) -> bytes:
    generator = random.Random(seed)
    values = {
        "amount": lambda: f"{generator.gauss(100 + shift, 10):.3f}",
        "age": lambda: str(generator.randint(20, 60)),
        "city": lambda: generator.choice(cities),
        "extra": lambda: "1",
    }
    lines = [",".join(columns)]
    lines += [",".join(values[name]() for name in columns) for _ in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def _land(
    storage: FakeStorageClient, name: str, data: bytes, event_id: str = ""
) -> StorageObjectEvent:
    generation = storage.put(LANDING, name, data)
    return StorageObjectEvent(
        event_id=event_id or f"event-{name}-{generation}",
        bucket=LANDING,
        name=name,
        generation=generation,
        size=len(data),
    )


def _bus(ctx: StepContext) -> RecordingBus:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus


def test_first_good_file_is_accepted_and_sets_schema_baseline_and_manifest(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    event = _land(storage, f"{DATASET}/day-1.csv", _csv(1))

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.state == "succeeded"
    [message] = _bus(ctx).of_type(DataValidated)
    assert message.source.name == event.name
    assert message.source.generation == event.generation
    paths = DatasetPaths(DATASET)
    assert ctx.artifacts.read(paths.schema) is not None
    stored = _baselines(storage).load()
    assert stored is not None
    assert stored.files == 1
    assert stored.summary.num_examples == 600
    run_id = message.run_id
    assert ctx.artifacts.read(paths.accepted_manifest(run_id)) is not None
    folder = RunPaths(run_id).step_dir("validation")
    stats = ctx.artifacts.read(f"{folder}/stats.pb")
    anomalies = ctx.artifacts.read(f"{folder}/anomalies.pbtxt")
    assert stats is not None
    assert anomalies is not None
    parsed = statistics_pb2.DatasetFeatureStatisticsList.FromString(stats.data)
    assert parsed.datasets[0].num_examples == 600
    assert not text_format.Parse(anomalies.data.decode(), anomalies_pb2.Anomalies()).anomaly_info
    assert b"ACCEPTED" in (ctx.artifacts.read(f"{folder}/report.html") or stats).data


def test_second_good_file_is_merged_into_the_baseline(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))

    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-2.csv", _csv(2, rows=400)))

    stored = _baselines(storage).load()
    assert stored is not None
    assert stored.files == 2
    assert stored.summary.num_examples == 1000
    assert len(_bus(ctx).of_type(DataValidated)) == 2


def test_a_file_whose_distribution_only_moved_is_accepted_with_an_alert_naming_the_skew(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))
    event = _land(storage, f"{DATASET}/day-2.csv", _csv(3, shift=15.0))

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.state == "succeeded", outcome.summary
    assert len(_bus(ctx).of_type(DataValidated)) == 2
    [alert] = _bus(ctx).of_type(Alert)
    assert (alert.severity, alert.step) == ("WARNING", "validate")
    assert alert.summary.startswith(
        f"value skew in gs://{LANDING}/{DATASET}/day-2.csv#{event.generation}: drift in 'amount'"
    )
    assert "retrains on all accepted data" in alert.summary
    [skew] = outcome.outputs["value_skews"]
    assert (skew["check"], skew["feature"]) == ("drift", "amount")
    assert skew["value"] > skew["threshold"]
    assert "value skew" in outcome.summary
    run_id = alert.run_id or ""
    found = ctx.artifacts.read_model(DatasetPaths(DATASET).accepted_manifest(run_id), AcceptedFile)
    assert found is not None
    assert [(s.check, s.feature) for s in found[0].value_skews] == [("drift", "amount")]
    stored = _baselines(storage).load()
    assert stored is not None
    assert stored.files == 2
    assert not any(
        name.startswith(DatasetPaths(DATASET).quarantine(run_id))
        for name in storage.bucket(ARTIFACTS).objects
    )


def test_a_schema_broken_file_is_still_rejected_quarantined_and_alerted(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))
    drifted = _csv(3, shift=30.0, cities=("a", "b", "z", "y"), columns=("amount", "city", "extra"))
    event = _land(storage, f"{DATASET}/day-2.csv", drifted)

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.state == "rejected"
    [alert] = _bus(ctx).of_type(Alert)
    assert alert.severity == "ERROR"
    run = ctx.ledger.get(alert.run_id or "")
    assert run is not None
    assert run.state == "rejected"
    assert "Column dropped" in (run.error or "")
    assert len(_bus(ctx).of_type(DataValidated)) == 1
    errors = outcome.outputs["errors"]
    assert any(e.startswith("feature 'age': Column dropped") for e in errors)
    assert any(e.startswith("feature 'city': Unexpected string values") for e in errors)
    assert not any(e.startswith("feature 'amount'") for e in errors)  # drift alone: retrain
    assert "amount" in {skew["feature"] for skew in outcome.outputs["value_skews"]}
    assert any("'extra'" in warning for warning in outcome.outputs["warnings"])
    prefix = DatasetPaths(DATASET).quarantine(run.run_id)
    assert storage.bucket(ARTIFACTS).objects[f"{prefix}/day-2.csv"].data == drifted
    assert f"{prefix}/anomalies.pbtxt" in storage.bucket(ARTIFACTS).objects
    stored = _baselines(storage).load()
    assert stored is not None
    assert stored.files == 1


def test_drift_set_to_error_in_the_pipeline_config_quarantines_a_drifted_file_as_before(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    ctx.artifacts.write(
        DatasetPaths(DATASET).pipeline_config, b"validation:\n  severities:\n    drift: error\n"
    )
    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))
    event = _land(storage, f"{DATASET}/day-2.csv", _csv(3, shift=15.0))

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.state == "rejected"
    errors = outcome.outputs["errors"]
    assert [e.split(":")[0] for e in errors] == ["feature 'amount'"]
    assert outcome.outputs["value_skews"] == []
    [alert] = _bus(ctx).of_type(Alert)
    assert alert.severity == "ERROR"
    assert len(_bus(ctx).of_type(DataValidated)) == 1
    stored = _baselines(storage).load()
    assert stored is not None
    assert stored.files == 1


def test_redelivered_event_does_nothing_the_second_time(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    event = _land(storage, f"{DATASET}/day-1.csv", _csv(1))
    handle_object_finalized(ctx, event)

    assert handle_object_finalized(ctx, event) is None

    stored = _baselines(storage).load()
    assert stored is not None
    assert stored.files == 1


def test_resumed_step_after_a_crash_does_not_merge_the_file_twice(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))
    event = _land(storage, f"{DATASET}/day-2.csv", _csv(2))
    # A first delivery merged the baseline, then died before its manifest and claim update.
    handle_object_finalized(ctx, event)
    run_id = _bus(ctx).of_type(DataValidated)[-1].run_id
    manifest = DatasetPaths(DATASET).accepted_manifest(run_id)
    ctx.artifacts.delete(manifest)
    claim_path = RunPaths(run_id).claim("validate")
    ctx.artifacts.delete(claim_path)
    ctx.artifacts.delete(RunPaths(run_id).result("validate"))
    ctx.claims.acquire(run_id, "validate", owner="dead", now=clock.now, lease=timedelta(seconds=60))
    clock.advance(120)

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.state == "succeeded"
    stored = _baselines(storage).load()
    assert stored is not None
    assert stored.files == 2
    assert stored.summary.num_examples == 1200
    assert ctx.artifacts.read(manifest) is not None


def test_concurrent_accepts_do_not_lose_each_others_statistics(storage: FakeStorageClient) -> None:
    """A file recorded while a compaction runs (after it listed the files) is neither lost
    nor counted twice: the compaction covers only what it listed."""
    config = ValidationConfig()
    artifacts = ArtifactStore(storage, ARTIFACTS)  # type: ignore[arg-type]
    now = [1000.0]
    store = BaselineStore(artifacts, DATASET, clock=lambda: now[0])
    schema = infer_schema(summary_of({"x": [1, 2, 3]}), config)
    store.merge_file("file-1", summary_of({"x": [1, 2, 3]}), config, schema=schema)
    store.compact(config, schema=schema, is_accepted=lambda _file_id: True)
    now[0] += 5
    store.merge_file("file-2", summary_of({"x": [4, 5]}), config, schema=schema)
    original_list = artifacts.list_objects
    raced = []

    def list_then_lose_a_race(prefix, **options):  # type: ignore[no-untyped-def]
        listed = list(original_list(prefix, **options))
        if not raced:
            raced.append(True)
            _baselines(storage).merge_file("file-3", summary_of({"x": [6]}), config, schema=schema)
        return iter(listed)

    artifacts.list_objects = list_then_lose_a_race  # type: ignore[method-assign]
    compaction = store.compact(config, schema=schema, is_accepted=lambda _file_id: True)
    artifacts.list_objects = original_list  # type: ignore[method-assign]

    assert compaction.merged == ("file-2",)
    merged = _baselines(storage).load(schema, config)
    assert merged is not None
    assert merged.files == 3
    assert merged.summary.num_examples == 6
    assert merged.recent_files == ("file-3",)


def test_user_edited_schema_wins_over_inference(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    schema_text = (
        'feature { name: "amount" type: FLOAT }\n'
        'feature { name: "age" type: INT int_domain { min: 18 max: 30 } }\n'
        'feature { name: "city" type: BYTES }\n'
    )
    ctx.artifacts.write(DatasetPaths(DATASET).schema, schema_text.encode())

    outcome = handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))

    assert outcome is not None
    assert outcome.state == "rejected"
    assert any("Out-of-range values" in error for error in outcome.outputs["errors"])
    stored = ctx.artifacts.read(DatasetPaths(DATASET).schema)
    assert stored is not None
    assert stored.data.decode() == schema_text


def test_bad_input_fails_the_run_with_the_location_and_alerts(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    event = _land(storage, f"{DATASET}/broken.csv", b"a,b\n1,2\n3\n")

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.run_state == "failed"
    [alert] = _bus(ctx).of_type(Alert)
    assert "row 2 (line 3)" in alert.summary
    assert "gs://cascade-landing/credit/broken.csv" in alert.summary
    assert _bus(ctx).of_type(DataValidated) == []


def test_odd_object_name_is_recorded_as_bad_input(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    event = _land(storage, f"{DATASET}/bad name;rm.csv", _csv(1))

    outcome = handle_object_finalized(ctx, event)

    assert outcome is not None
    assert outcome.run_state == "failed"
    assert "object name segment 2" in outcome.summary
    assert event.name not in storage.downloads
