"""The Dataflow launch of a Beam statistics job, asserted exactly on spec'd clients.

No emulator exists for Dataflow: the clients are ``create_autospec`` of the real
google-cloud-dataflow-client classes, and the request is compared as a whole with the
one built from the library's own types (fields per Google's LaunchFlexTemplateRequest
reference and the Flex Template samples: docs/beam.md).
"""

from __future__ import annotations

import dataclasses
import json
import re
from unittest.mock import create_autospec

import pytest
from google.api_core import exceptions as gexc
from google.cloud import dataflow_v1beta3 as dataflow

from cascade.core.errors import InvalidConfigError, TransientError
from cascade.core.settings import Settings
from cascade.jobs.beam_jobs import launch_refusal
from cascade.jobs.beam_spec import BeamMaterializeSpec, pipeline_parameters
from cascade.jobs.dataflow_runner import (
    BeamStatisticsSpec,
    DataflowBeamRunner,
    DataflowLayout,
    dataflow_job_name,
)

RUN_ID = "shop-20261201T004400Z-3f2a9c1d"
SETTINGS = Settings(project="acme-ml", region="europe-west4", artifacts_bucket="acme-artifacts")
SPEC = BeamStatisticsSpec(
    run_id=RUN_ID,
    dataset="shop",
    input_uri="gs://acme-landing/shop/orders.csv",
    generation=1764549840123456,
    uri="gs://acme-landing/shop/orders.csv#1764549840123456",
    file_format="csv",
    validation_config='{"max_tracked_values": 500}',
    output_uri=f"gs://acme-artifacts/dataflow/outputs/{RUN_ID}/validate",
    float_features=("income", "age"),
    string_features=("zip",),
)
SPLIT = BeamMaterializeSpec(
    run_id=RUN_ID,
    dataset="shop",
    request_uri=f"gs://acme-artifacts/dataflow/inputs/{RUN_ID}/materialize.json",
    output_uri=f"gs://acme-artifacts/dataflow/outputs/{RUN_ID}/transform",
)
ENVIRONMENT = dataflow.FlexTemplateRuntimeEnvironment(
    max_workers=10,
    service_account_email="cascade-dataflow-workers@acme-ml.iam.gserviceaccount.com",
    temp_location="gs://acme-artifacts/dataflow/temp",
    staging_location="gs://acme-artifacts/dataflow/staging",
    additional_user_labels={"cascade_run_id": RUN_ID.lower(), "cascade_dataset": "shop"},
)
NAME_RULE = re.compile(r"^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$")


def _runner() -> tuple[DataflowBeamRunner, object, object]:
    templates = create_autospec(dataflow.FlexTemplatesServiceClient, instance=True)
    jobs = create_autospec(dataflow.JobsV1Beta3Client, instance=True)
    runner = DataflowBeamRunner(
        DataflowLayout.from_settings(SETTINGS), templates=templates, jobs=jobs
    )
    return runner, templates, jobs


def test_the_launch_request_is_exactly_the_flex_template_launch() -> None:
    runner, templates, _ = _runner()
    templates.launch_flex_template.return_value = dataflow.LaunchFlexTemplateResponse(
        job=dataflow.Job(id="2026-12-01_00_44_00-1234567890", name=dataflow_job_name(RUN_ID))
    )

    job_id = runner.submit(SPEC)

    assert job_id == "2026-12-01_00_44_00-1234567890"
    templates.launch_flex_template.assert_called_once_with(
        request=dataflow.LaunchFlexTemplateRequest(
            project_id="acme-ml",
            location="europe-west4",
            launch_parameter=dataflow.LaunchFlexTemplateParameter(
                job_name=dataflow_job_name(RUN_ID),
                container_spec_gcs_path="gs://acme-artifacts/dataflow/templates/cascade-beam.json",
                parameters={
                    "input": "gs://acme-landing/shop/orders.csv",
                    "generation": "1764549840123456",
                    "uri": "gs://acme-landing/shop/orders.csv#1764549840123456",
                    "file_format": "csv",
                    "validation_config": '{"max_tracked_values": 500}',
                    "float_features": json.dumps(["age", "income"]),
                    "string_features": json.dumps(["zip"]),
                    "output": f"gs://acme-artifacts/dataflow/outputs/{RUN_ID}/validate",
                    "block_bytes": str(64 * 1024 * 1024),
                },
                environment=dataflow.FlexTemplateRuntimeEnvironment(
                    max_workers=10,
                    service_account_email="cascade-dataflow-workers@acme-ml.iam.gserviceaccount.com",
                    temp_location="gs://acme-artifacts/dataflow/temp",
                    staging_location="gs://acme-artifacts/dataflow/staging",
                    additional_user_labels={
                        "cascade_run_id": RUN_ID.lower(),
                        "cascade_dataset": "shop",
                    },
                ),
            ),
        )
    )


def test_a_stream_file_s_launch_adds_its_record_fields_and_nothing_else() -> None:
    runner, templates, _ = _runner()
    templates.launch_flex_template.return_value = dataflow.LaunchFlexTemplateResponse(
        job=dataflow.Job(id="2026-12-01_00_44_00-1234567891", name=dataflow_job_name(RUN_ID))
    )
    stream = dataclasses.replace(SPEC, file_format="avro", record_fields=("city", "amount"))

    runner.submit(stream)

    request = templates.launch_flex_template.call_args.kwargs["request"]
    parameters = dict(request.launch_parameter.parameters)
    assert parameters.pop("record_fields") == json.dumps(["amount", "city"])
    assert parameters == {**pipeline_parameters(SPEC), "file_format": "avro"}


@pytest.mark.parametrize(
    "run_id",
    [RUN_ID, "Shop_Data.2026/12/01", "9" * 300, "--x--", "ÿ weird ☃ name"],
)
def test_job_names_follow_dataflow_rules_and_stay_unique(run_id: str) -> None:
    name = dataflow_job_name(run_id)

    assert NAME_RULE.match(name), name
    assert len(name) <= 63
    assert name == dataflow_job_name(run_id)
    assert name != dataflow_job_name(run_id + "x")


def test_a_repeated_launch_finds_the_active_job_of_the_run() -> None:
    runner, templates, jobs = _runner()
    templates.launch_flex_template.side_effect = gexc.AlreadyExists("job name in use")
    jobs.list_jobs.return_value = [
        dataflow.Job(id="other", name="cascade-stats-other-0000000000"),
        dataflow.Job(id="first-launch", name=dataflow_job_name(RUN_ID)),
    ]

    assert runner.submit(SPEC) == "first-launch"
    jobs.list_jobs.assert_called_once_with(
        request=dataflow.ListJobsRequest(
            project_id="acme-ml",
            location="europe-west4",
            filter=dataflow.ListJobsRequest.Filter.ACTIVE,
        )
    )


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (gexc.PermissionDenied("no actAs on the workers' account"), InvalidConfigError),
        (gexc.InvalidArgument("bad parameter"), InvalidConfigError),
        (gexc.ServiceUnavailable("try again"), TransientError),
    ],
)
def test_launch_errors_split_into_permanent_and_transient(
    error: Exception, raised: type[Exception]
) -> None:
    runner, templates, _ = _runner()
    templates.launch_flex_template.side_effect = error

    with pytest.raises(raised):
        runner.submit(SPEC)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (dataflow.JobState.JOB_STATE_PENDING, "queued"),
        (dataflow.JobState.JOB_STATE_RUNNING, "running"),
        (dataflow.JobState.JOB_STATE_DONE, "succeeded"),
        (dataflow.JobState.JOB_STATE_FAILED, "failed"),
        (dataflow.JobState.JOB_STATE_CANCELLED, "cancelled"),
        (dataflow.JobState.JOB_STATE_DRAINED, "cancelled"),
    ],
)
def test_job_states_map_to_cascade_states(state: dataflow.JobState, expected: str) -> None:
    runner, _, jobs = _runner()
    jobs.get_job.return_value = dataflow.Job(id="j1", name="n", current_state=state)

    status = runner.get("j1")

    assert status.state == expected
    assert status.finished == (expected in ("succeeded", "failed", "cancelled"))
    jobs.get_job.assert_called_once_with(
        request=dataflow.GetJobRequest(project_id="acme-ml", job_id="j1", location="europe-west4")
    )


def test_the_split_launch_is_the_same_template_in_materialize_mode() -> None:
    """The transform's split: the template's ``mode``, ``request`` and ``output``
    parameters only, its own job name, the same environment as a statistics job."""
    runner, templates, _ = _runner()
    split_name = dataflow_job_name(RUN_ID, kind="split")
    templates.launch_flex_template.return_value = dataflow.LaunchFlexTemplateResponse(
        job=dataflow.Job(id="2026-12-01_00_45_00-42", name=split_name)
    )

    job_id = runner.submit(SPLIT)

    assert job_id == "2026-12-01_00_45_00-42"
    parameters = {
        "mode": "materialize",
        "request": f"gs://acme-artifacts/dataflow/inputs/{RUN_ID}/materialize.json",
        "output": f"gs://acme-artifacts/dataflow/outputs/{RUN_ID}/transform",
    }
    templates.launch_flex_template.assert_called_once_with(
        request=dataflow.LaunchFlexTemplateRequest(
            project_id="acme-ml",
            location="europe-west4",
            launch_parameter=dataflow.LaunchFlexTemplateParameter(
                job_name=split_name,
                container_spec_gcs_path="gs://acme-artifacts/dataflow/templates/cascade-beam.json",
                parameters=parameters,
                environment=ENVIRONMENT,
            ),
        )
    )
    assert split_name != dataflow_job_name(RUN_ID)  # the run's statistics job is another
    assert NAME_RULE.match(split_name)
    assert launch_refusal(split_name, parameters) == ""  # the template declares them so


def test_a_repeated_split_launch_finds_the_runs_split_job_not_its_statistics_job() -> None:
    runner, templates, jobs = _runner()
    templates.launch_flex_template.side_effect = gexc.AlreadyExists("job name in use")
    jobs.list_jobs.return_value = [
        dataflow.Job(id="stats", name=dataflow_job_name(RUN_ID)),
        dataflow.Job(id="split", name=dataflow_job_name(RUN_ID, kind="split")),
    ]

    assert runner.submit(SPLIT) == "split"
    assert runner.submit(SPEC) == "stats"
