"""The Vertex AI BatchPredictionJob request, asserted exactly with a spec'd JobServiceClient
(no Vertex AI emulator exists; the request is built with aiplatform_v1's own types)."""

from __future__ import annotations

from unittest import mock

import pytest
from google.cloud import aiplatform_v1 as vertex

from cascade.batch.vertex import (
    BatchResources,
    batch_prediction_job,
    job_service_client,
    submit_batch_prediction_job,
)
from cascade.core.errors import InvalidConfigError
from cascade.core.settings import Settings

SETTINGS = Settings(
    project="acme-ml",
    region="europe-west4",
    jobs_service_account="jobs@acme-ml.iam.gserviceaccount.com",
)
MODEL = "projects/acme-ml/locations/europe-west4/models/123@3"


def _job(**overrides: object) -> vertex.BatchPredictionJob:
    options: dict[str, object] = {
        "dataset": "credit-risk",
        "version": "3",
        "vertex_model": MODEL,
        "batch_id": "0123456789abcdef0123456789abcdef",
        "inputs": ["key", "city", "age"],
        "output_project": "acme-ml",
        "output_dataset": "cascade_predictions",
        "settings": SETTINGS,
        "table": "acme-ml.features.customers",
        **overrides,
    }
    return batch_prediction_job(**options)  # type: ignore[arg-type]


def test_a_bigquery_table_becomes_exactly_this_request() -> None:
    expected = vertex.BatchPredictionJob(
        display_name="cascade-batch-credit-risk-v3-0123456789ab",
        model=MODEL,
        input_config=vertex.BatchPredictionJob.InputConfig(
            instances_format="bigquery",
            bigquery_source=vertex.BigQuerySource(input_uri="bq://acme-ml.features.customers"),
        ),
        instance_config=vertex.BatchPredictionJob.InstanceConfig(
            instance_type="object", included_fields=["age", "city", "key"]
        ),
        output_config=vertex.BatchPredictionJob.OutputConfig(
            predictions_format="bigquery",
            bigquery_destination=vertex.BigQueryDestination(
                output_uri="bq://acme-ml.cascade_predictions"
            ),
        ),
        dedicated_resources=vertex.BatchDedicatedResources(
            machine_spec=vertex.MachineSpec(machine_type="n1-standard-4"),
            starting_replica_count=1,
            max_replica_count=4,
        ),
        service_account="jobs@acme-ml.iam.gserviceaccount.com",
        labels={
            "cascade_dataset": "credit-risk",
            "cascade_model_version": "3",
            "cascade_batch_id": "0123456789abcdef0123456789abcdef",
        },
    )
    job = _job()
    assert job == expected
    assert not job.instance_config.key_field  # BigQuery output: the key passes through the model


def test_jsonl_files_are_a_gcs_source_and_other_formats_are_refused() -> None:
    job = _job(
        table=None, files=["gs://acme-landing/b/part-0.jsonl", "gs://acme-landing/b/part-1.jsonl"]
    )
    assert job.input_config == vertex.BatchPredictionJob.InputConfig(
        instances_format="jsonl",
        gcs_source=vertex.GcsSource(
            uris=["gs://acme-landing/b/part-0.jsonl", "gs://acme-landing/b/part-1.jsonl"]
        ),
    )
    for uri in ("gs://b/x.parquet", "gs://b/x.csv", "/tmp/x.jsonl"):
        with pytest.raises(InvalidConfigError):
            _job(table=None, files=[uri])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vertex_model": None}, "no Vertex AI model"),
        ({"table": "acme-ml.features"}, "project.dataset.table"),
        ({"table": "acme-ml.f;DROP.t"}, "not a valid BigQuery"),
        ({"table": None}, "either a BigQuery table or"),
        ({"files": ["gs://b/x.jsonl"]}, "either a BigQuery table or"),
        ({"settings": Settings(project="acme-ml")}, "JOBS_SERVICE_ACCOUNT"),
    ],
)
def test_requests_vertex_ai_would_refuse_are_refused_here(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises((InvalidConfigError, ValueError), match=message):
        _job(**overrides)


def test_resources_and_labels_follow_the_arguments() -> None:
    job = _job(
        dataset="Big_Data",
        resources=BatchResources(
            machine_type="n1-highmem-8", starting_replica_count=2, max_replica_count=10
        ),
    )
    assert job.dedicated_resources.machine_spec.machine_type == "n1-highmem-8"
    assert (
        job.dedicated_resources.starting_replica_count,
        job.dedicated_resources.max_replica_count,
    ) == (2, 10)
    assert job.labels["cascade_dataset"] == "big_data"
    with pytest.raises(InvalidConfigError):
        BatchResources(starting_replica_count=3, max_replica_count=2)


def test_the_submitter_creates_the_job_under_the_regional_parent() -> None:
    client = mock.create_autospec(vertex.JobServiceClient, instance=True)
    client.list_batch_prediction_jobs.return_value = []
    client.create_batch_prediction_job.return_value = vertex.BatchPredictionJob(
        name="projects/acme-ml/locations/europe-west4/batchPredictionJobs/77"
    )
    job = _job()
    name = submit_batch_prediction_job(client, SETTINGS, job)
    assert name == "projects/acme-ml/locations/europe-west4/batchPredictionJobs/77"
    client.list_batch_prediction_jobs.assert_called_once_with(
        request=vertex.ListBatchPredictionJobsRequest(
            parent="projects/acme-ml/locations/europe-west4",
            filter='labels.cascade_batch_id="0123456789abcdef0123456789abcdef"',
        )
    )
    client.create_batch_prediction_job.assert_called_once_with(
        parent="projects/acme-ml/locations/europe-west4", batch_prediction_job=job
    )


def test_a_resubmitted_batch_returns_the_job_created_the_first_time() -> None:
    client = mock.create_autospec(vertex.JobServiceClient, instance=True)
    client.list_batch_prediction_jobs.return_value = [
        vertex.BatchPredictionJob(
            name="projects/acme-ml/locations/europe-west4/batchPredictionJobs/5",
            state=vertex.JobState.JOB_STATE_RUNNING,
        )
    ]
    name = submit_batch_prediction_job(client, SETTINGS, _job())
    assert name.endswith("/batchPredictionJobs/5")
    client.create_batch_prediction_job.assert_not_called()


def test_a_failed_earlier_job_does_not_stop_a_new_one() -> None:
    client = mock.create_autospec(vertex.JobServiceClient, instance=True)
    client.list_batch_prediction_jobs.return_value = [
        vertex.BatchPredictionJob(name="x/5", state=vertex.JobState.JOB_STATE_FAILED)
    ]
    client.create_batch_prediction_job.return_value = vertex.BatchPredictionJob(name="x/6")
    assert submit_batch_prediction_job(client, SETTINGS, _job()) == "x/6"


def test_the_client_talks_to_the_regional_endpoint() -> None:
    with mock.patch.object(vertex, "JobServiceClient", autospec=True) as factory:
        job_service_client(SETTINGS)
    factory.assert_called_once_with(
        client_options={"api_endpoint": "europe-west4-aiplatform.googleapis.com"}
    )
