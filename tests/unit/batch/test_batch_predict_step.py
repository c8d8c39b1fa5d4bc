"""The batch-predict step: what a request scores, the local job service's batch jobs,
the Vertex AI request (spec'd mock) — for a hybrid dataset's head, on the head's rows
materialised in the local BigQuery —, and the deploy step asking for a batch."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock, create_autospec

import google.cloud.bigquery as bigquery
import pytest
from google.cloud import aiplatform_v1
from pydantic import ValidationError

from cascade.batch.head import head_table_id, request_log_table
from cascade.batch.jobs import BatchJobSpec, LocalBatchRunner
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.fakes import RecordingBus
from cascade.core.messages import BatchPredictRequest
from cascade.core.pipeline_config import push_pipeline_config
from cascade.localcloud.batch_executor import LocalBatchExecutor, local_batch_job_id
from cascade.localcloud.job_executor import LocalJobExecutor, LocalJobStore
from cascade.localcloud.job_service import serve
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.processes import wait_until
from cascade.serving.request_log import ensure_request_log_table, request_log_row
from cascade.serving.state import DeployedVersion, ServingState, update_serving_state
from cascade.steps import batch_predict
from cascade.steps.batch_predict import batch_spec, handle_batch_predict_request
from cascade.steps.deploy import handle_model_blessed
from cascade.transform.spec import LabelSpec, NumericTransform, SplitSpec, TransformSpec
from tests.bigquery_emulator import bigquery_client, bigquery_local  # noqa: F401
from tests.unit.conftest import Clock, memory_step_context
from tests.unit.deploy.fakes import FakeDeployer
from tests.unit.deploy.test_deploy_step import BLESSED, evaluation
from tests.unit.evaluation.builders import DATASET, RUN_ID, start_run

AT = datetime(2026, 11, 30, tzinfo=UTC)
TABLE = "cascade-local.cascade_features.customers"
ENDPOINT = "projects/p/locations/us-central1/endpoints/1"
FILES = ("gs://cascade-landing/batch/a.jsonl", "gs://cascade-landing/batch/b.jsonl")


def deploy(ctx: StepContext, *versions: str, traffic: dict[str, int]) -> None:
    def state(_: ServingState | None) -> ServingState:
        return ServingState(
            dataset=DATASET,
            target="vertex",
            endpoint=ENDPOINT,
            versions=[
                DeployedVersion(
                    version=version,
                    run_id=f"{DATASET}-run{version}",
                    model_uri=f"gs://cascade-artifacts/runs/{version}/model",
                    state="serving" if version in traffic else "retired",
                    deployed_at=AT,
                    vertex_model=f"projects/p/locations/us-central1/models/m@{version}",
                )
                for version in versions
            ],
            traffic=traffic,
            updated_at=AT,
            mode="hybrid",
        )

    update_serving_state(ctx.artifacts, DATASET, state)


def configure(ctx: StepContext, serving: str) -> None:
    push_pipeline_config(ctx.artifacts, DATASET, serving.encode(), where="pipeline.yaml")


@pytest.fixture
def ctx(clock: Clock) -> StepContext:
    from cascade.core.settings import Settings

    context = memory_step_context(
        clock,
        Settings(function_timeout_s=60, jobs_service_account="jobs@p.iam.gserviceaccount.com"),
    )
    deploy(context, "1", "2", traffic={"2": 100})
    return context


# The request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"table": "p.d.t; DROP TABLE x"},
        {"table": "`cascade-local.d.t`"},
        {"table": "cascade-local.d"},
        {"files": ["http://example.com/a.csv"]},
        {"files": ["gs://cascade-landing/a\nb.csv"]},
        {"files": [f"gs://cascade-landing/{n}.csv" for n in range(101)]},
        {"table": TABLE, "files": list(FILES)},
        {"version": "../1"},
        {"version": "v2"},
        {"request_id": "a b"},
        {"dataset": "../etc"},
        {"surprise": True},
    ],
)
def test_hostile_requests_are_refused_naming_the_field(fields: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, BadRequestError)):
        BatchPredictRequest.model_validate({"dataset": DATASET, **fields})


def test_a_request_scores_its_own_source_with_the_primary_version(ctx: StepContext) -> None:
    spec = batch_spec(ctx, BatchPredictRequest(dataset=DATASET, table=TABLE))
    assert spec == BatchJobSpec(dataset=DATASET, version="2", table=TABLE)
    spec = batch_spec(ctx, BatchPredictRequest(dataset=DATASET, files=FILES, version="1"))
    assert spec == BatchJobSpec(dataset=DATASET, version="1", files=FILES)


def test_without_a_source_the_datasets_batch_source_is_scored(ctx: StepContext) -> None:
    with pytest.raises(BadRequestError, match=r"no serving\.batch_source"):
        batch_spec(ctx, BatchPredictRequest(dataset=DATASET))
    configure(ctx, f"serving:\n  mode: hybrid\n  batch_source: {{table: {TABLE}}}\n")
    assert batch_spec(ctx, BatchPredictRequest(dataset=DATASET)).table == TABLE


def test_an_unknown_version_or_dataset_is_a_bad_request(ctx: StepContext) -> None:
    with pytest.raises(BadRequestError, match=r"no 7 \(versions: 1, 2\)"):
        batch_spec(ctx, BatchPredictRequest(dataset=DATASET, table=TABLE, version="7"))
    with pytest.raises(BadRequestError, match="nothing of 'other' is deployed"):
        batch_spec(ctx, BatchPredictRequest(dataset="other", table=TABLE))


# Google Cloud: a Vertex AI BatchPredictionJob -----------------------------------------


def test_on_google_cloud_the_step_submits_a_batch_prediction_job(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = create_autospec(aiplatform_v1.JobServiceClient, instance=True)
    client.list_batch_prediction_jobs.return_value = []
    client.create_batch_prediction_job.return_value = aiplatform_v1.BatchPredictionJob(
        name="projects/p/locations/us-central1/batchPredictionJobs/9"
    )
    monkeypatch.setattr(batch_predict, "job_service_client", lambda settings: client)
    monkeypatch.setattr(
        batch_predict, "read_transform_spec", lambda artifacts, run_id: _transform_spec()
    )

    handle_batch_predict_request(
        ctx, BatchPredictRequest(dataset=DATASET, table=TABLE, request_id="r1"), event_id="e"
    )

    [call] = client.create_batch_prediction_job.call_args_list
    assert call.kwargs["parent"] == f"projects/{ctx.settings.project}/locations/us-central1"
    job: aiplatform_v1.BatchPredictionJob = call.kwargs["batch_prediction_job"]
    assert job.model == "projects/p/locations/us-central1/models/m@2"
    assert job.input_config.bigquery_source.input_uri == f"bq://{TABLE}"
    assert job.output_config.bigquery_destination.output_uri == (
        f"bq://{ctx.settings.project}.cascade_predictions"
    )
    assert sorted(job.instance_config.included_fields) == ["age", "customer_id"]
    assert job.service_account == "jobs@p.iam.gserviceaccount.com"


def _transform_spec() -> TransformSpec:
    return TransformSpec(
        dataset=DATASET,
        run_id=RUN_ID,
        label=LabelSpec(name="defaulted", problem_type="binary", classes=["no", "yes"]),
        features=[NumericTransform(name="age", mean=41.5, std=9.0, fill_value=41.5)],
        split=SplitSpec(),
        snapshot=[],
        train_files=[],
        eval_files=[],
        train_rows=0,
        eval_rows=0,
        created_at=AT,
        passthrough_key="customer_id",
    )


# Google Cloud: a hybrid dataset's head ---------------------------------------------------

HEAD_CONFIG = f"serving:\n  mode: hybrid\n  batch_source: {{table: {TABLE}}}\n  head: {{keys: 2}}\n"


@pytest.fixture(scope="module")
def customers(bigquery_client: bigquery.Client) -> str:  # noqa: F811
    """The batch source (c1 to c4) and the request log in the local BigQuery."""
    project = bigquery_client.project
    for dataset in ("cascade_features", "cascade_predictions"):
        bigquery_client.create_dataset(f"{project}.{dataset}", exists_ok=True)
    schema = [
        bigquery.SchemaField("customer_id", "STRING"),
        bigquery.SchemaField("age", "FLOAT64"),
        bigquery.SchemaField("note", "STRING"),
    ]
    bigquery_client.create_table(bigquery.Table(TABLE, schema=schema))
    rows = [{"customer_id": f"c{n}", "age": 30.0 + n, "note": f"n{n}"} for n in range(1, 5)]
    assert bigquery_client.insert_rows_json(TABLE, rows) == []
    return TABLE


@pytest.fixture
def cloud(
    clock: Clock,
    bigquery_local: LocalCloudSettings,  # noqa: F811
    customers: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[StepContext, MagicMock]:
    """A step context on Google Cloud (no job service) whose BigQuery is the local one,
    and the spec'd Vertex AI client it submits to."""
    settings = bigquery_local.runtime_settings().model_copy(
        update={
            "job_service_url": None,
            "jobs_service_account": "jobs@p.iam.gserviceaccount.com",
            "function_timeout_s": 60,
        }
    )
    context = memory_step_context(clock, settings)
    deploy(context, "1", "2", traffic={"2": 100})
    client = create_autospec(aiplatform_v1.JobServiceClient, instance=True)
    client.list_batch_prediction_jobs.return_value = []
    client.create_batch_prediction_job.return_value = aiplatform_v1.BatchPredictionJob(
        name="projects/p/locations/us-central1/batchPredictionJobs/9"
    )
    monkeypatch.setattr(batch_predict, "job_service_client", lambda settings: client)
    monkeypatch.setattr(
        batch_predict, "read_transform_spec", lambda artifacts, run_id: _transform_spec()
    )
    return context, client


def _log_requests(client: bigquery.Client, settings: Any, at: datetime, *keys: str) -> None:
    table = request_log_table(settings)
    ensure_request_log_table(client, table)
    rows = [
        request_log_row(
            endpoint=ENDPOINT,
            deployed_model_id="2",
            request_id=number,
            keys=[key],
            key_field="customer_id",
            logged_at=at,
        )
        for number, key in enumerate(keys)
    ]
    assert client.insert_rows_json(table, rows) == []


def _submitted_job(client: MagicMock) -> aiplatform_v1.BatchPredictionJob:
    [call] = client.create_batch_prediction_job.call_args_list
    job: aiplatform_v1.BatchPredictionJob = call.kwargs["batch_prediction_job"]
    return job


def test_on_google_cloud_a_heads_rows_are_materialised_and_the_job_scores_them(
    cloud: tuple[StepContext, MagicMock],
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    ctx, client = cloud
    configure(ctx, HEAD_CONFIG)
    # c3: 3 requests; c1 and c9: 2 each (c1 first by key); c2: 1. c9 is not in the source.
    _log_requests(
        bigquery_client,
        ctx.settings,
        ctx.clock() - timedelta(hours=1),
        *["c3", "c3", "c3", "c9", "c9", "c1", "c1", "c2"],
    )

    handle_batch_predict_request(
        ctx, BatchPredictRequest(dataset=DATASET, request_id="deploy:2"), event_id="e"
    )

    job = _submitted_job(client)
    batch_id = job.labels["cascade_batch_id"]
    head = head_table_id(ctx.settings.project, "cascade_predictions", DATASET, batch_id)
    rows = bigquery_client.query(f"SELECT * FROM `{head}` ORDER BY customer_id").result()
    assert [dict(row) for row in rows] == [
        {"customer_id": "c1", "age": 31.0, "note": "n1"},
        {"customer_id": "c3", "age": 33.0, "note": "n3"},
    ]
    assert job.input_config.bigquery_source.input_uri == f"bq://{head}"
    assert sorted(job.instance_config.included_fields) == ["age", "customer_id"]
    assert job.output_config.bigquery_destination.output_uri == (
        f"bq://{ctx.settings.project}.cascade_predictions"
    )


def test_on_google_cloud_a_head_without_traffic_scores_the_whole_table(
    cloud: tuple[StepContext, MagicMock], clock: Clock
) -> None:
    ctx, client = cloud
    configure(ctx, HEAD_CONFIG)
    clock.advance(timedelta(days=365).total_seconds())  # nothing logged in the window

    handle_batch_predict_request(
        ctx, BatchPredictRequest(dataset=DATASET, request_id="r2"), event_id="e"
    )

    assert _submitted_job(client).input_config.bigquery_source.input_uri == f"bq://{TABLE}"


def test_on_google_cloud_files_with_a_head_are_refused_saying_why(
    cloud: tuple[StepContext, MagicMock],
) -> None:
    ctx, client = cloud
    configure(ctx, HEAD_CONFIG)
    with pytest.raises(BadRequestError, match="a head is scored from a BigQuery table only"):
        handle_batch_predict_request(
            ctx, BatchPredictRequest(dataset=DATASET, files=FILES, request_id="r3"), event_id="e"
        )
    client.create_batch_prediction_job.assert_not_called()


def test_a_redelivered_head_request_leaves_the_submitted_jobs_table_alone(
    cloud: tuple[StepContext, MagicMock], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, client = cloud
    configure(ctx, HEAD_CONFIG)
    client.list_batch_prediction_jobs.return_value = [
        aiplatform_v1.BatchPredictionJob(
            name="projects/p/locations/us-central1/batchPredictionJobs/7",
            state=aiplatform_v1.JobState.JOB_STATE_RUNNING,
        )
    ]

    def no_bigquery(settings: Any) -> bigquery.Client:
        raise AssertionError("the head table was materialised again under a running job")

    monkeypatch.setattr(batch_predict, "make_bigquery_client", no_bigquery)

    handle_batch_predict_request(
        ctx, BatchPredictRequest(dataset=DATASET, request_id="deploy:2"), event_id="e2"
    )

    client.create_batch_prediction_job.assert_not_called()


# Locally: the job service runs the batch task ----------------------------------------


@pytest.fixture
def job_service(tmp_path: Path) -> Iterator[tuple[str, LocalBatchExecutor]]:
    script = tmp_path / "python"
    # Stands in for the interpreter: records its argv, fails for dataset "bad".
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/argv.txt\n'
        'case "$*" in *"--dataset bad"*) echo "scoring failed: no such table" >&2; exit 3;; esac\n'
    )
    script.chmod(0o755)
    batches = LocalBatchExecutor(
        tmp_path / "batch-jobs",
        project="cascade-local",
        python=str(script),
        base_environment={"PATH": os.environ["PATH"]},
    )
    jobs = LocalJobExecutor(
        LocalJobStore(tmp_path / "jobs"),
        notifier=None,  # type: ignore[arg-type]
        project="cascade-local",
        trainer_module="none",
        python=sys.executable,
        base_environment={},
    )
    server = serve(jobs, 0, batches)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", batches
    finally:
        server.shutdown()
        server.server_close()


def test_locally_the_job_service_runs_the_batch_task_once_per_request(
    ctx: StepContext, job_service: tuple[str, LocalBatchExecutor], tmp_path: Path
) -> None:
    url, batches = job_service
    settings = ctx.settings.model_copy(update={"job_service_url": url})
    local = dataclasses.replace(ctx, settings=settings)
    message = BatchPredictRequest(dataset=DATASET, files=FILES, request_id="r1")

    handle_batch_predict_request(local, message, event_id="e1")
    handle_batch_predict_request(local, message, event_id="e2")  # redelivered

    job_id = local_batch_job_id(f"{DATASET}:r1")
    assert wait_until(lambda: (job := batches.load(job_id)) is not None and job.finished, 30)
    job = batches.load(job_id)
    assert job is not None
    assert (job.state, job.error) == ("succeeded", "")
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv == [
        f"-m cascade.batch.task --dataset {DATASET} --files {' '.join(FILES)} --version 2"
    ]
    runner = LocalBatchRunner(url)
    try:
        assert [listed.job_id for listed in runner.list_jobs()] == [job_id]
        assert runner.job(job_id).name.endswith(f"/batchPredictionJobs/{job_id}")
    finally:
        runner.close()


def test_a_failed_batch_task_fails_its_job_with_the_tasks_last_words(
    job_service: tuple[str, LocalBatchExecutor],
) -> None:
    _, batches = job_service
    job = batches.submit(BatchJobSpec(dataset="bad", version="1", table=TABLE), "r")
    assert wait_until(
        lambda: (found := batches.load(job.job_id)) is not None and found.finished, 30
    )
    failed = batches.load(job.job_id)
    assert failed is not None
    assert failed.state == "failed"
    assert "scoring failed: no such table" in failed.error


def test_the_job_service_refuses_a_hostile_batch(
    job_service: tuple[str, LocalBatchExecutor],
) -> None:
    import requests

    url, _ = job_service
    body = {"spec": {"dataset": DATASET, "version": "1", "table": "x; DROP"}, "request_id": "r"}
    answer = requests.post(f"{url}/v1/batchPredictionJobs", json=body, timeout=10)
    assert answer.status_code == 400
    assert requests.get(f"{url}/v1/batchPredictionJobs/{'0' * 16}", timeout=10).status_code == 404


# The deploy step asks for a batch ---------------------------------------------------


@pytest.mark.parametrize(
    ("serving", "asked"),
    [
        (f"serving:\n  mode: hybrid\n  batch_source: {{table: {TABLE}}}\n", True),
        (f"serving:\n  mode: static\n  batch_source: {{table: {TABLE}}}\n", True),
        (f"serving:\n  mode: dynamic\n  batch_source: {{table: {TABLE}}}\n", False),
        ("serving:\n  mode: hybrid\n", False),
    ],
)
def test_a_promoted_version_of_a_precomputed_dataset_is_scored_at_once(
    clock: Clock, serving: str, asked: bool
) -> None:
    from cascade.core.settings import Settings

    ctx = memory_step_context(clock, Settings(function_timeout_s=60))
    start_run(ctx.ledger)
    configure(ctx, serving)
    evaluation(ctx, "blessed")

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=FakeDeployer())

    assert isinstance(ctx.bus, RecordingBus)
    requests_sent = ctx.bus.of_type(BatchPredictRequest)
    if asked:
        [request] = requests_sent
        assert isinstance(request, BatchPredictRequest)
        assert request.version == "3"  # the version FakeDeployer promotes
        assert request.request_id == "deploy:3"
        assert (request.table, request.files) == (None, ())
    else:
        assert requests_sent == []
