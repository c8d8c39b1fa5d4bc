"""Which job runner a process builds, and how: Vertex AI's regional endpoint with the
configured job timeout in the cloud, the local job service in the local cloud.

``JobServiceClient`` is replaced by an autospec'd class, so the test sees the exact
client options it is built with and the exact requests the runner sends through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from unittest.mock import create_autospec

import pytest
from google.cloud import aiplatform_v1 as vertex
from pytest_mock import MockerFixture

from cascade.core.job_spec import TrainingJobSpec, WorkerPool
from cascade.core.settings import Settings
from cascade.jobs.local_runner import LocalJobRunner
from cascade.jobs.runners import job_runner_for
from cascade.jobs.vertex_runner import VertexJobRunner, custom_job_spec
from cascade.localcloud.local_settings import LocalCloudSettings

PARENT = "projects/proj-1/locations/europe-west4"
SETTINGS = Settings(
    project="proj-1",
    region="europe-west4",
    landing_bucket="land-1",
    artifacts_bucket="arts",
    trainer_image="europe-docker.pkg.dev/proj-1/images/trainer@sha256:ab",
    jobs_service_account="cx-vertex-jobs@proj-1.iam.gserviceaccount.com",
    job_timeout_s=5400,
)
SPEC = TrainingJobSpec(
    run_id="credit-abc",
    dataset="credit",
    display_name="cascade-train-credit-abc",
    transform_spec_uri="gs://arts/runs/credit-abc/transform/transform.json",
    output_dir="gs://arts/runs/credit-abc/training",
    chief=WorkerPool(machine_type="n1-standard-4"),
    labels={"cascade_run_id": "credit-abc", "cascade_dataset": "credit"},
)


@pytest.fixture(autouse=True)
def _one_runner_per_test() -> Iterator[None]:
    """``job_runner_for`` keeps one runner per process: forget it around each test."""
    forget = getattr(job_runner_for, "cache_clear", lambda: None)
    forget()
    yield
    forget()


@pytest.fixture
def client_class(mocker: MockerFixture) -> Any:
    """``JobServiceClient`` as the runner module sees it: an autospec'd class."""
    cls = create_autospec(vertex.JobServiceClient)
    client = cls.return_value
    client.list_custom_jobs.return_value = []
    client.create_custom_job.return_value = vertex.CustomJob(name=f"{PARENT}/customJobs/42")
    mocker.patch.object(vertex, "JobServiceClient", cls)  # the module vertex_runner calls
    return cls


def _submitted_job(client_class: Any) -> vertex.CustomJob:
    client = client_class.return_value
    client.list_custom_jobs.assert_called_once_with(
        request={
            "parent": PARENT,
            "filter": (
                'labels.cascade_run_id="credit-abc" AND display_name="cascade-train-credit-abc"'
            ),
        }
    )
    [call] = client.create_custom_job.call_args_list
    assert call.args == ()
    assert set(call.kwargs) == {"parent", "custom_job"}
    assert call.kwargs["parent"] == PARENT
    job = call.kwargs["custom_job"]
    assert isinstance(job, vertex.CustomJob)
    return job


def test_from_settings_builds_the_regional_client_on_first_use_only(client_class: Any) -> None:
    runner = VertexJobRunner.from_settings(SETTINGS, timeout_s=5400)

    client_class.assert_not_called()  # a cold start that never trains builds no client
    assert runner.client is client_class.return_value
    assert runner.client is client_class.return_value

    client_class.assert_called_once_with(
        client_options={"api_endpoint": "europe-west4-aiplatform.googleapis.com"}
    )
    assert runner.parent == PARENT


def test_from_settings_submits_with_the_timeout_it_was_given(client_class: Any) -> None:
    runner = VertexJobRunner.from_settings(SETTINGS, timeout_s=1800)

    name = runner.submit(SPEC, request_id="credit-abc")

    assert name == f"{PARENT}/customJobs/42"
    job = _submitted_job(client_class)
    assert job == vertex.CustomJob(
        display_name="cascade-train-credit-abc",
        job_spec=custom_job_spec(SPEC, SETTINGS, timeout_s=1800),
        labels={"cascade_run_id": "credit-abc", "cascade_dataset": "credit"},
    )
    assert job.job_spec.scheduling.timeout == timedelta(seconds=1800)


def test_a_process_without_a_job_service_trains_on_vertex_with_the_settings_timeout(
    client_class: Any,
) -> None:
    runner = job_runner_for(SETTINGS)

    assert isinstance(runner, VertexJobRunner)
    assert job_runner_for(SETTINGS) is runner  # one runner (and client) per process
    runner.submit(SPEC, request_id="credit-abc")
    client_class.assert_called_once_with(
        client_options={"api_endpoint": "europe-west4-aiplatform.googleapis.com"}
    )
    job = _submitted_job(client_class)
    assert job.job_spec.scheduling.timeout == timedelta(seconds=5400)


def test_the_local_clouds_settings_pick_the_local_job_service(client_class: Any) -> None:
    settings = LocalCloudSettings(job_service_port=8899).runtime_settings()

    runner = job_runner_for(settings)

    assert isinstance(runner, LocalJobRunner)
    assert runner.base_url == "http://127.0.0.1:8899"
    client_class.assert_not_called()


def test_the_local_cloud_without_its_job_service_port_falls_back_to_vertex() -> None:
    settings = LocalCloudSettings(job_service_port=0).runtime_settings()

    assert settings.job_service_url is None
    assert isinstance(job_runner_for(settings), VertexJobRunner)
