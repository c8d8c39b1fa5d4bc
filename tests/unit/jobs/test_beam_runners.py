"""Which Beam runner a process gets: the local job service's stand-in, or Dataflow."""

from __future__ import annotations

from unittest import mock

from google.cloud import dataflow_v1beta3 as dataflow

from cascade.core.settings import Settings
from cascade.jobs.beam_jobs import LocalBeamRunner
from cascade.jobs.beam_runners import beam_runner_for
from cascade.jobs.beam_spec import BeamStatisticsSpec
from cascade.jobs.dataflow_runner import DataflowBeamRunner
from cascade.jobs.runners import job_runner_for


def test_the_local_cloud_gets_the_job_services_stand_in() -> None:
    runner = beam_runner_for(Settings(job_service_url="http://127.0.0.1:9"))

    assert isinstance(runner, LocalBeamRunner)
    assert runner.base_url == "http://127.0.0.1:9"


def test_a_deployed_function_launches_on_dataflow_as_terraform_lays_it_out() -> None:
    settings = Settings(
        project="proj", region="europe-west4", artifacts_bucket="arts", topic_prefix="cx-"
    )
    with (
        mock.patch.object(dataflow, "FlexTemplatesServiceClient", autospec=True) as templates,
        mock.patch.object(dataflow, "JobsV1Beta3Client", autospec=True) as jobs,
    ):
        runner = beam_runner_for(settings)

        assert isinstance(runner, DataflowBeamRunner)
        templates.assert_called_once_with()
        jobs.assert_called_once_with()
    request = runner.launch_request(_spec())
    assert (request.project_id, request.location) == ("proj", "europe-west4")
    parameter = request.launch_parameter
    assert parameter.container_spec_gcs_path == "gs://arts/dataflow/templates/cascade-beam.json"
    assert parameter.environment.service_account_email == (
        "cx-dataflow-workers@proj.iam.gserviceaccount.com"
    )


def test_the_beam_selector_is_not_the_training_one() -> None:
    settings = Settings(job_service_url="http://127.0.0.1:9")
    assert not isinstance(job_runner_for(settings), LocalBeamRunner)


def _spec() -> BeamStatisticsSpec:
    return BeamStatisticsSpec(
        run_id="credit-0123456789abcdef",
        dataset="credit",
        input_uri="gs://landing/credit/a.csv",
        generation=7,
        uri="gs://landing/credit/a.csv#7",
        file_format="csv",
        validation_config="{}",
        output_uri="gs://arts/dataflow/outputs/credit-0123456789abcdef/validate",
    )
