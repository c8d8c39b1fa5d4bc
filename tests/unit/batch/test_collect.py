"""Collecting a Vertex AI batch prediction job's output, on the local BigQuery.

There is no Vertex AI emulator: the job's output tables are made here in the shape
Vertex AI documents (``predictions_<time>``: the instance columns and ``prediction``;
``errors_<time>``: the instance columns and ``errors`` STRUCT<code, message>), then the
collection copies them into Cascade's version tables with BigQuery jobs, refusing the
rows local scoring refuses, exactly once; and the batch-collect sweep decides what to
collect from the jobs a spec'd JobServiceClient lists.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import create_autospec

import google.cloud.bigquery as bigquery
import pytest
from google.cloud import aiplatform_v1 as vertex

from cascade.batch import collect as collect_module
from cascade.batch.collect import CollectedBatch, VertexBatchOutput, collect_vertex_output
from cascade.batch.reload import PREDICTIONS_WAREHOUSE
from cascade.batch.tables import BatchManifest, manifest_name, output_tables
from cascade.batch.vertex import cascade_batch_jobs, vertex_output
from cascade.core.context import StepContext
from cascade.core.errors import BadInputError, BadRequestError
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.messages import Alert, BatchCollectRequest
from cascade.core.settings import Settings
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.serving.precomputed import MemoryPrecomputedStore
from cascade.serving.state import DeployedVersion, ServingState, update_serving_state
from cascade.steps import batch_collect
from cascade.steps.batch_collect import collect_jobs, handle_batch_collect_request
from tests.bigquery_emulator import bigquery_client, bigquery_local
from tests.unit.conftest import Clock, memory_step_context

__all__ = ["bigquery_client", "bigquery_local"]  # fixtures

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
BATCH_ID = "0123456789abcdef0123456789abcdef"
KEY = "customer_id"
LONG_KEY = "k" * 1025
MODEL_V4 = "projects/p/locations/europe-west4/models/credit@4"


@pytest.fixture
def settings(bigquery_local: LocalCloudSettings) -> Settings:
    return bigquery_local.runtime_settings()


@pytest.fixture
def bq_dataset(settings: Settings, bigquery_client: bigquery.Client) -> str:
    name = settings.warehouse_dataset(PREDICTIONS_WAREHOUSE)
    bigquery_client.create_dataset(name, exists_ok=True)
    return name


def _answer(key: Any, score: float) -> dict[str, Any]:
    return {KEY: key, "score": score}


GOOD = [("a", _answer("a", 0.25)), ("b", _answer("b", 0.75))]
REFUSED = {
    # key -> (prediction JSON text, the reason the errors table must give)
    None: ('{"customer_id": null, "score": 0.1}', "the key is null"),
    "": ('{"customer_id": "", "score": 0.1}', "the key is empty"),
    LONG_KEY: (f'{{"customer_id": "{LONG_KEY}", "score": 0.1}}', "over the 1024-byte limit"),
    "not-json": ("{oops", "the prediction is not JSON"),
    "array": ("[1, 2]", "the prediction is not an object holding the key"),
    "swapped": ('{"customer_id": "other", "score": 0.1}', "did not pass the key through"),
}


def _vertex_tables(
    client: bigquery.Client, project: str, dataset: str, kind: str, *, with_errors: bool = True
) -> VertexBatchOutput:
    """Vertex AI's output tables for one job; ``kind``: the prediction column's type."""
    suffix = f"2026_11_30T12_00_00_{uuid.uuid4().hex[:8]}Z"
    predictions = f"{project}.{dataset}.predictions_{suffix}"
    column = {
        "STRING": "STRING",
        "JSON": "JSON",
        "RECORD": "STRUCT<customer_id STRING, score FLOAT64>",
    }
    client.query(
        f"CREATE TABLE `{predictions}` (customer_id STRING, amount FLOAT64, "
        f"prediction {column[kind]})"
    ).result()
    rows: list[tuple[Any, str]] = [(key, _json(answer)) for key, answer in GOOD]
    rows.append(("a", _json(_answer("a", 0.99))))  # a duplicate key
    if kind == "STRING":
        rows += [(key, text) for key, (text, _) in REFUSED.items()]
    values = ", ".join(f"({_literal(key)}, 1.0, {_prediction(kind, text)})" for key, text in rows)
    client.query(
        f"INSERT INTO `{predictions}` (customer_id, amount, prediction) VALUES {values}"
    ).result()
    if with_errors:
        errors = f"{project}.{dataset}.errors_{suffix}"
        client.query(
            f"CREATE TABLE `{errors}` (customer_id STRING, amount FLOAT64, "
            "errors STRUCT<code INT64, message STRING>)"
        ).result()
        client.query(
            f"INSERT INTO `{errors}` (customer_id, amount, errors) VALUES "
            "('c', 2.0, STRUCT(3 AS code, 'Bad input: amount' AS message))"
        ).result()
    return VertexBatchOutput(
        job="projects/p/locations/europe-west4/batchPredictionJobs/77",
        dataset=f"ds-{uuid.uuid4().hex[:8]}",
        version="4",
        batch_id=BATCH_ID,
        source="bq://p.features.customers",
        output_dataset=f"{project}.{dataset}",
        output_table=f"predictions_{suffix}",
        key=KEY,
    )


def _json(value: dict[str, Any]) -> str:
    import json

    return json.dumps(value)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _prediction(kind: str, text: str) -> str:
    if kind == "STRING":
        return _literal(text)
    if kind == "JSON":
        return f"PARSE_JSON({_literal(text)})"
    import json

    answer = json.loads(text)
    return f"STRUCT({_literal(answer[KEY])} AS customer_id, {answer['score']} AS score)"


def _collect(
    client: bigquery.Client,
    settings: Settings,
    bq_dataset: str,
    output: VertexBatchOutput,
    artifacts: MemoryArtifactStore,
    **options: Any,
) -> CollectedBatch:
    return collect_vertex_output(
        output,
        client=client,
        artifacts=artifacts,
        project=settings.project,
        bq_dataset=bq_dataset,
        now=lambda: T0,
        **options,
    )


def _table(client: bigquery.Client, name: str, order: str) -> list[dict[str, Any]]:
    return [dict(row) for row in client.query(f"SELECT * FROM `{name}` ORDER BY {order}").result()]


@pytest.mark.parametrize("kind", ["STRING", "JSON", "RECORD"])
def test_the_jobs_answers_land_in_the_version_table_one_per_key_without_the_key(
    bigquery_client: bigquery.Client, settings: Settings, bq_dataset: str, kind: str
) -> None:
    output = _vertex_tables(bigquery_client, settings.project, bq_dataset, kind)
    artifacts = MemoryArtifactStore("cascade-artifacts")

    result = _collect(bigquery_client, settings, bq_dataset, output, artifacts)

    predictions, errors = output_tables(
        settings.project, output.dataset, "4", bq_dataset=bq_dataset
    )
    rows = _table(bigquery_client, predictions, "key")
    assert [(row["key"], row["prediction"]) for row in rows] == [
        ("a", {"score": 0.25}),
        ("b", {"score": 0.75}),
    ]
    assert {(row["model_version"], row["batch_id"], row["predicted_at"]) for row in rows} == {
        ("4", BATCH_ID, T0)
    }
    failed = _table(bigquery_client, errors, "row_number")
    assert [row["reason"] for row in failed if row["reason"].startswith("duplicate")] == [
        "duplicate key: one prediction per key per batch"
    ]
    assert [row["reason"] for row in failed if row["reason"].startswith("Vertex AI")] == [
        "Vertex AI: Bad input: amount"
    ]
    assert {row["source"] for row in failed} == {"bq://p.features.customers"}
    manifest = result.manifest
    assert not result.skipped
    assert (manifest.rows_scored, manifest.rows_failed) == (2, len(failed))
    assert manifest.rows_read == len(rows) + len(failed)
    assert manifest.source_identity == f"vertex:{output.job}"
    assert artifacts.read_model(manifest_name(output.dataset, BATCH_ID), BatchManifest)


def test_each_row_local_scoring_would_refuse_is_refused_with_its_reason(
    bigquery_client: bigquery.Client, settings: Settings, bq_dataset: str
) -> None:
    output = _vertex_tables(bigquery_client, settings.project, bq_dataset, "STRING")
    _collect(bigquery_client, settings, bq_dataset, output, MemoryArtifactStore("a"))

    _, errors = output_tables(settings.project, output.dataset, "4", bq_dataset=bq_dataset)
    failed = _table(bigquery_client, errors, "row_number")
    for key, (_, reason) in REFUSED.items():
        [row] = [row for row in failed if reason in row["reason"]]
        expected = None if key is None else key[:1024]
        assert row["key"] == expected, reason
        about_the_key = row["reason"].startswith("the key")
        assert row["field"] == (KEY if about_the_key else ""), reason
    assert len({row["row_number"] for row in failed}) == len(failed)  # each row numbered once


def test_a_collection_retried_after_a_crash_inserts_nothing_twice(
    bigquery_client: bigquery.Client, settings: Settings, bq_dataset: str
) -> None:
    output = _vertex_tables(bigquery_client, settings.project, bq_dataset, "STRING")
    artifacts = MemoryArtifactStore("cascade-artifacts")
    first = _collect(bigquery_client, settings, bq_dataset, output, artifacts)
    artifacts.delete(manifest_name(output.dataset, BATCH_ID))  # died before the manifest

    again = _collect(bigquery_client, settings, bq_dataset, output, artifacts)
    done = _collect(bigquery_client, settings, bq_dataset, output, artifacts)

    predictions, errors = output_tables(
        settings.project, output.dataset, "4", bq_dataset=bq_dataset
    )
    assert len(_table(bigquery_client, predictions, "key")) == 2
    assert len(_table(bigquery_client, errors, "row_number")) == first.manifest.rows_failed
    assert (again.manifest.rows_scored, again.manifest.rows_failed) == (
        first.manifest.rows_scored,
        first.manifest.rows_failed,
    )
    assert done.skipped
    assert done.manifest == again.manifest


def test_the_store_is_loaded_for_the_collected_version_and_counted(
    bigquery_client: bigquery.Client, settings: Settings, bq_dataset: str
) -> None:
    output = _vertex_tables(
        bigquery_client, settings.project, bq_dataset, "STRING", with_errors=False
    )
    loaded: list[tuple[str, str]] = []

    def load(dataset: str, version: str) -> int:
        loaded.append((dataset, version))
        return 2

    result = _collect(
        bigquery_client, settings, bq_dataset, output, MemoryArtifactStore("a"), load_store=load
    )

    assert loaded == [(output.dataset, "4")]
    assert result.manifest.rows_stored == 2
    assert not any(
        r.startswith("Vertex AI") for r in _reasons(bigquery_client, settings, output, bq_dataset)
    )


def _reasons(
    client: bigquery.Client, settings: Settings, output: VertexBatchOutput, bq_dataset: str
) -> list[str]:
    _, errors = output_tables(settings.project, output.dataset, "4", bq_dataset=bq_dataset)
    return [row["reason"] for row in _table(client, errors, "row_number")]


def test_an_output_without_the_key_column_is_refused_before_anything_is_written(
    bigquery_client: bigquery.Client, settings: Settings, bq_dataset: str
) -> None:
    output = _vertex_tables(bigquery_client, settings.project, bq_dataset, "STRING")
    other = VertexBatchOutput(**{**output.__dict__, "key": "account"})
    artifacts = MemoryArtifactStore("a")
    with pytest.raises(BadInputError, match="no 'account' column"):
        _collect(bigquery_client, settings, bq_dataset, other, artifacts)
    assert list(artifacts.list_names("")) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", "id`; DROP TABLE x; --"),
        ("key", "a.b"),
        ("output_table", "predictions_x` UNION ALL SELECT"),
        ("output_table", "other_table"),
        ("output_dataset", "p.d`x"),
        ("dataset", "../etc"),
        ("version", "4 OR 1=1"),
        ("batch_id", "../../x"),
    ],
)
def test_hostile_names_from_a_job_are_refused(field: str, value: str) -> None:
    fields: dict[str, Any] = {
        "job": "projects/p/locations/l/batchPredictionJobs/1",
        "dataset": "credit",
        "version": "4",
        "batch_id": BATCH_ID,
        "source": "bq://p.d.t",
        "output_dataset": "p.cascade_predictions",
        "output_table": "predictions_2026_11_30T12_00_00_000Z",
        "key": KEY,
    }
    VertexBatchOutput(**fields)  # the valid one is accepted
    with pytest.raises((BadInputError, ValueError)):
        VertexBatchOutput(**{**fields, field: value})


def test_the_key_limit_is_the_scoring_tasks() -> None:
    from cascade.batch import scoring

    assert collect_module.MAX_KEY_BYTES == scoring.MAX_KEY_BYTES


# The Vertex AI job -----------------------------------------------------------------


def _job(state: vertex.JobState, **labels: str) -> vertex.BatchPredictionJob:
    return vertex.BatchPredictionJob(
        name="projects/p/locations/europe-west4/batchPredictionJobs/77",
        model=MODEL_V4,
        state=state,
        labels={
            "cascade_dataset": "credit",
            "cascade_model_version": "4",
            "cascade_batch_id": BATCH_ID,
            **labels,
        },
        input_config=vertex.BatchPredictionJob.InputConfig(
            instances_format="bigquery",
            bigquery_source=vertex.BigQuerySource(input_uri="bq://p.features.customers"),
        ),
        output_info=vertex.BatchPredictionJob.OutputInfo(
            bigquery_output_dataset="bq://cascade-local.cascade_predictions",
            bigquery_output_table="predictions_2026_11_30T12_00_00_000Z",
        ),
        error={"code": 3, "message": "quota exceeded"},
    )


def test_a_jobs_labels_and_output_info_make_its_collection() -> None:
    output = vertex_output(_job(vertex.JobState.JOB_STATE_SUCCEEDED), key=KEY)
    assert (output.dataset, output.version, output.batch_id) == ("credit", "4", BATCH_ID)
    tables = "cascade-local.cascade_predictions"
    assert output.predictions == f"{tables}.predictions_2026_11_30T12_00_00_000Z"
    assert output.errors == f"{tables}.errors_2026_11_30T12_00_00_000Z"
    assert output.source == "bq://p.features.customers"
    job = _job(vertex.JobState.JOB_STATE_SUCCEEDED)
    del job.labels["cascade_batch_id"]
    with pytest.raises(BadInputError, match="label"):
        vertex_output(job, key=KEY)


def test_the_sweep_lists_cascades_jobs_created_within_the_lookback() -> None:
    client = create_autospec(vertex.JobServiceClient, instance=True)
    client.list_batch_prediction_jobs.return_value = [_job(vertex.JobState.JOB_STATE_RUNNING)]
    settings = Settings(project="acme-ml", region="europe-west4")

    jobs = cascade_batch_jobs(client, settings, created_after=T0 - timedelta(days=7))

    assert len(jobs) == 1
    client.list_batch_prediction_jobs.assert_called_once_with(
        request=vertex.ListBatchPredictionJobsRequest(
            parent="projects/acme-ml/locations/europe-west4",
            filter='labels.cascade_batch_id:* AND create_time>"2026-11-23T12:00:00Z"',
        )
    )


@pytest.fixture
def ctx(clock: Clock) -> StepContext:
    context = memory_step_context(clock, Settings(function_timeout_s=60))
    state = ServingState(
        dataset="credit",
        target="vertex",
        endpoint="projects/p/locations/europe-west4/endpoints/1",
        versions=[
            DeployedVersion(
                version="4",
                run_id="credit-run4",
                model_uri="gs://cascade-artifacts/runs/credit-run4/model",
                state="serving",
                deployed_at=T0,
                vertex_model=MODEL_V4,
            )
        ],
        traffic={"4": 100},
        updated_at=T0,
        mode="static",
    )
    update_serving_state(context.artifacts, "credit", lambda _: state)
    return context


def test_a_job_that_ended_without_output_is_alerted_once(ctx: StepContext) -> None:
    failed = _job(vertex.JobState.JOB_STATE_FAILED)
    client = create_autospec(bigquery.Client, instance=True)

    first = collect_jobs(ctx, [failed], bigquery_client=client, make_store=lambda: None)
    second = collect_jobs(ctx, [failed], bigquery_client=client, make_store=lambda: None)

    assert first.ended_without_output == [failed.name]
    assert second.ended_without_output == []
    bus: RecordingBus = ctx.bus  # type: ignore[assignment]
    [alert] = [m for m in bus.published if isinstance(m, Alert)]
    assert "JOB_STATE_FAILED" in alert.summary
    assert "quota exceeded" in alert.summary
    assert client.method_calls == []  # nothing to copy


def test_running_jobs_wait_and_a_bad_job_stops_no_other(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    collected: list[str] = []

    def fake_collect(output: VertexBatchOutput, **options: Any) -> CollectedBatch:
        collected.append(output.job)
        assert options["load_store"] is not None  # static and deployed: the store is loaded
        manifest = BatchManifest.model_construct()
        return CollectedBatch(manifest, skipped=False)

    monkeypatch.setattr(batch_collect, "collect_vertex_output", fake_collect)
    monkeypatch.setattr(batch_collect, "read_transform_spec", lambda artifacts, run_id: _spec())
    stranger = _job(vertex.JobState.JOB_STATE_SUCCEEDED, cascade_dataset="Not A Dataset")
    good = _job(vertex.JobState.JOB_STATE_PARTIALLY_SUCCEEDED)
    running = _job(vertex.JobState.JOB_STATE_RUNNING)

    report = collect_jobs(
        ctx,
        [stranger, running, good],
        bigquery_client=create_autospec(bigquery.Client, instance=True),
        make_store=lambda: MemoryPrecomputedStore(),
    )

    assert collected == [good.name]
    assert report.running == 1
    assert list(report.failures) == [stranger.name]


def test_a_static_dataset_without_a_store_is_collected_and_alerted(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_collect(output: VertexBatchOutput, **options: Any) -> CollectedBatch:
        seen.update(options)
        return CollectedBatch(BatchManifest.model_construct(), skipped=False)

    monkeypatch.setattr(batch_collect, "collect_vertex_output", fake_collect)
    monkeypatch.setattr(batch_collect, "read_transform_spec", lambda artifacts, run_id: _spec())

    collect_jobs(
        ctx,
        [_job(vertex.JobState.JOB_STATE_SUCCEEDED)],
        bigquery_client=create_autospec(bigquery.Client, instance=True),
        make_store=lambda: None,
    )

    assert seen["load_store"] is None
    bus: RecordingBus = ctx.bus  # type: ignore[assignment]
    [alert] = [m for m in bus.published if isinstance(m, Alert)]
    assert "CASCADE_PRECOMPUTED_INSTANCE" in alert.summary


def _spec() -> Any:
    from tests.unit.batch.test_batch_predict_step import _transform_spec

    return _transform_spec()


# The scheduled function ------------------------------------------------------------


def test_the_topology_sweeps_on_a_schedule_into_the_batch_collect_function() -> None:
    from cascade.core.topology import load_topology
    from tests.bigquery_emulator import REPO_ROOT

    topology = load_topology(REPO_ROOT / "infra/topology.yaml")
    schedule = topology.schedules["batch-collect"]
    function = topology.functions["batch-collect"]
    assert schedule.topic == function.trigger.topic == "batch-collect-requests"
    BatchCollectRequest.model_validate(schedule.data)
    assert function.retry.policy == "do_not_retry"  # the next tick sweeps again


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"lookback_s": 0}', b'{"lookback_s": 99999999}', b'{"dataset": "x"}'],
    ids=["not-json", "zero", "beyond-30-days", "extra-field"],
)
def test_a_bad_sweep_request_is_refused_naming_the_field(ctx: StepContext, body: bytes) -> None:
    attributes, data = _pubsub_event(body)
    with pytest.raises(BadRequestError):
        handle_batch_collect_request(ctx, attributes, data)


def test_the_local_cloud_has_nothing_to_collect(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = dataclasses.replace(ctx, settings=Settings(job_service_url="http://127.0.0.1:1"))
    monkeypatch.setattr(batch_collect, "job_service_client", _never)

    report = handle_batch_collect_request(local, *_pubsub_event(b"{}"))

    assert report == batch_collect.CollectReport()


def test_a_cloud_sweep_lists_with_the_requests_lookback_and_collects(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = create_autospec(vertex.JobServiceClient, instance=True)
    client.list_batch_prediction_jobs.return_value = [_job(vertex.JobState.JOB_STATE_FAILED)]
    monkeypatch.setattr(batch_collect, "job_service_client", lambda settings: client)
    monkeypatch.setattr(
        batch_collect,
        "make_bigquery_client",
        lambda settings: create_autospec(bigquery.Client, instance=True),
    )

    report = handle_batch_collect_request(ctx, *_pubsub_event(b'{"lookback_s": 3600}'))

    request = client.list_batch_prediction_jobs.call_args.kwargs["request"]
    after = (ctx.clock() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert request.filter == f'labels.cascade_batch_id:* AND create_time>"{after}"'
    assert report.ended_without_output == [client.list_batch_prediction_jobs.return_value[0].name]


def _never(*args: Any) -> Any:
    raise AssertionError("the local cloud lists no Vertex AI jobs")


def _pubsub_event(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    attributes = {
        "specversion": "1.0",
        "id": "42",
        "source": "//pubsub.googleapis.com/projects/p/topics/cascade-batch-collect-requests",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
    }
    data = {
        "message": {"data": base64.b64encode(body).decode(), "messageId": "42"},
        "subscription": "projects/p/subscriptions/eventarc-batch-collect",
    }
    return attributes, data


def test_a_job_that_keeps_failing_to_collect_is_alerted_once(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_collect, "read_transform_spec", lambda artifacts, run_id: None)
    job = _job(vertex.JobState.JOB_STATE_SUCCEEDED)
    client = create_autospec(bigquery.Client, instance=True)

    for _ in range(3):
        report = collect_jobs(ctx, [job], bigquery_client=client, make_store=lambda: None)
        assert list(report.failures) == [job.name]  # tried again at every sweep

    bus: RecordingBus = ctx.bus  # type: ignore[assignment]
    [alert] = [m for m in bus.published if isinstance(m, Alert)]
    assert "no transform spec" in alert.summary


# Answers of versions no longer deployed ---------------------------------------------


def _with_versions(ctx: StepContext, states: dict[str, str]) -> None:
    def change(_: ServingState | None) -> ServingState:
        return ServingState(
            dataset="credit",
            target="local",
            endpoint="credit",
            versions=[
                DeployedVersion(
                    version=version,
                    run_id=f"credit-run{version}",
                    model_uri=f"gs://cascade-artifacts/runs/credit-run{version}/model",
                    state=state,  # type: ignore[arg-type]
                    deployed_at=T0,
                )
                for version, state in states.items()
            ],
            traffic={"4": 100},
            updated_at=T0,
            mode="static",
        )

    update_serving_state(ctx.artifacts, "credit", change)


def test_answers_of_versions_no_longer_deployed_leave_the_store_once(ctx: StepContext) -> None:
    _with_versions(ctx, {"2": "rolled_back", "3": "retired", "4": "serving", "5": "standby"})
    store = MemoryPrecomputedStore()
    for version in ("2", "3", "4", "5"):
        store.write("credit", version, [("a", {"p": 0.5}), ("b", {"p": 0.25})])
    drops: list[tuple[str, str]] = []
    original = store.drop_version

    def counted(dataset: str, version: str) -> int:
        drops.append((dataset, version))
        return original(dataset, version)

    store.drop_version = counted  # type: ignore[method-assign]

    first = batch_collect.drop_undeployed_answers(ctx, lambda: store)
    again = batch_collect.drop_undeployed_answers(ctx, lambda: store)

    assert first == ["credit v2", "credit v3"]
    assert again == []
    assert drops == [("credit", "2"), ("credit", "3")]
    for version, kept in (("2", False), ("3", False), ("4", True), ("5", True)):
        assert bool(store.read("credit", version, ["a", "b"])) is kept, version


def test_without_a_store_nothing_is_dropped_or_recorded(ctx: StepContext) -> None:
    _with_versions(ctx, {"3": "retired", "4": "serving"})
    assert batch_collect.drop_undeployed_answers(ctx, lambda: None) == []
    assert not [name for name in ctx.artifacts.list_names("models/") if "dropped-" in name]


def test_the_local_sweep_drops_undeployed_answers_too(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_versions(ctx, {"3": "retired", "4": "serving"})
    store = MemoryPrecomputedStore()
    store.write("credit", "3", [("a", {"p": 0.5})])
    monkeypatch.setattr(batch_collect, "store_factory", lambda settings, project: lambda: store)
    local = dataclasses.replace(ctx, settings=Settings(job_service_url="http://127.0.0.1:1"))
    monkeypatch.setattr(batch_collect, "job_service_client", _never)

    report = handle_batch_collect_request(local, *_pubsub_event(b"{}"))

    assert report.dropped == ["credit v3"]
    assert store.read("credit", "3", ["a"]) == {}
