"""Beam jobs on Dataflow (a file's statistics, a run's split): a Flex Template launched
through the Dataflow API.

``DataflowBeamRunner.submit`` launches the template that Cloud Build builds from
``shared/Dockerfile.beam`` (``gs://<artifacts>/dataflow/templates/cascade-beam.json``)
with the pipeline's arguments (``cascade.beam.pipeline``, or ``cascade.beam.materialize``
with ``mode=materialize``: ``beam_spec.launch_of``) as the template's parameters,
as the Dataflow workers' account, with temp and staging under ``dataflow/`` of the
artifacts bucket; it returns the job id, which the step records in its claim. ``get``
reads the job's state (``JobsV1Beta3Client.get_job``) for the job-events handler and
reconcile.

Idempotency: the job name is derived from the run id (Dataflow refuses a second active
job of one name with ALREADY_EXISTS), so a launch repeated after a crash finds the
running job instead of starting another; a finished job's outputs are written again
identically by a relaunch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import dataflow_v1beta3 as dataflow

from cascade.core.errors import TRANSIENT_ERRORS, InvalidConfigError, TransientError
from cascade.core.job_spec import JobState, JobStatus
from cascade.core.settings import Settings
from cascade.jobs.beam_spec import (
    BeamSpec,
    BeamStatisticsSpec,
    dataflow_job_name,
    launch_of,
    pipeline_parameters,
)
from cascade.jobs.records import label_value

__all__ = [
    "BeamStatisticsSpec",
    "DataflowBeamRunner",
    "DataflowLayout",
    "dataflow_job_name",
    "pipeline_parameters",
]

TEMPLATE_SPEC = "dataflow/templates/cascade-beam.json"
WORKERS_ACCOUNT_ID = "dataflow-workers"
_STATES: dict[int, JobState] = {
    dataflow.JobState.JOB_STATE_UNKNOWN: "queued",
    dataflow.JobState.JOB_STATE_QUEUED: "queued",
    dataflow.JobState.JOB_STATE_PENDING: "queued",
    dataflow.JobState.JOB_STATE_RUNNING: "running",
    dataflow.JobState.JOB_STATE_DRAINING: "running",
    dataflow.JobState.JOB_STATE_CANCELLING: "running",
    dataflow.JobState.JOB_STATE_RESOURCE_CLEANING_UP: "running",
    dataflow.JobState.JOB_STATE_PAUSING: "running",
    dataflow.JobState.JOB_STATE_PAUSED: "running",
    dataflow.JobState.JOB_STATE_DONE: "succeeded",
    dataflow.JobState.JOB_STATE_FAILED: "failed",
    dataflow.JobState.JOB_STATE_CANCELLED: "cancelled",
    dataflow.JobState.JOB_STATE_DRAINED: "cancelled",
    dataflow.JobState.JOB_STATE_STOPPED: "cancelled",
    dataflow.JobState.JOB_STATE_UPDATED: "cancelled",
}
_REFUSED = (gexc.InvalidArgument, gexc.PermissionDenied, gexc.FailedPrecondition, gexc.NotFound)


@dataclass(frozen=True)
class DataflowLayout:
    """Where the template and the jobs' files live, and who the workers run as."""

    project: str
    region: str
    template_spec_uri: str
    workers_account: str
    temp_location: str
    staging_location: str
    max_workers: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> DataflowLayout:
        """The layout infra/dataflow.tf creates: prefixes of the artifacts bucket and the
        ``<name_prefix>dataflow-workers`` account (Terraform's ``name_prefix`` is also
        the topic prefix every function is given)."""
        base = f"gs://{settings.artifacts_bucket}/dataflow"
        account_id = f"{settings.topic_prefix}{WORKERS_ACCOUNT_ID}"
        return cls(
            project=settings.project,
            region=settings.region,
            template_spec_uri=f"gs://{settings.artifacts_bucket}/{TEMPLATE_SPEC}",
            workers_account=f"{account_id}@{settings.project}.iam.gserviceaccount.com",
            temp_location=f"{base}/temp",
            staging_location=f"{base}/staging",
        )


class DataflowBeamRunner:
    """Launches and follows Beam jobs of either kind; the clients are injected."""

    def __init__(
        self,
        layout: DataflowLayout,
        *,
        templates: dataflow.FlexTemplatesServiceClient,
        jobs: dataflow.JobsV1Beta3Client,
    ) -> None:
        self._layout = layout
        self._templates = templates
        self._jobs = jobs

    @classmethod
    def from_settings(cls, settings: Settings) -> DataflowBeamRunner:
        """The runner a deployed function uses: Dataflow's global endpoint (the region
        goes in each request), the function's own credentials."""
        return cls(
            DataflowLayout.from_settings(settings),
            templates=dataflow.FlexTemplatesServiceClient(),
            jobs=dataflow.JobsV1Beta3Client(),
        )

    def launch_request(self, spec: BeamSpec) -> dataflow.LaunchFlexTemplateRequest:
        """The Flex Template launch of either kind of job (``launch_of``: its name and
        parameters); the environment is the same for both."""
        layout = self._layout
        job_name, parameters = launch_of(spec)
        return dataflow.LaunchFlexTemplateRequest(
            project_id=layout.project,
            location=layout.region,
            launch_parameter=dataflow.LaunchFlexTemplateParameter(
                job_name=job_name,
                container_spec_gcs_path=layout.template_spec_uri,
                parameters=parameters,
                environment=dataflow.FlexTemplateRuntimeEnvironment(
                    max_workers=layout.max_workers,
                    service_account_email=layout.workers_account,
                    temp_location=layout.temp_location,
                    staging_location=layout.staging_location,
                    additional_user_labels={
                        "cascade_run_id": label_value(spec.run_id),
                        "cascade_dataset": label_value(spec.dataset),
                    },
                ),
            ),
        )

    def submit(self, spec: BeamSpec) -> str:
        """Launch the job; its id. A job of the run and kind already active is found, not
        doubled."""
        request = self.launch_request(spec)
        try:
            response = self._templates.launch_flex_template(request=request)
        except gexc.AlreadyExists:
            return self._active_job_id(request.launch_parameter.job_name)
        except _REFUSED as error:
            raise InvalidConfigError(f"Dataflow refused the launch: {error}") from error
        except TRANSIENT_ERRORS as error:
            raise TransientError(f"Dataflow launch failed: {error}") from error
        job_id = str(response.job.id)
        if not job_id:
            raise TransientError("Dataflow answered the launch without a job id")
        return job_id

    def _active_job_id(self, job_name: str) -> str:
        request = dataflow.ListJobsRequest(
            project_id=self._layout.project,
            location=self._layout.region,
            filter=dataflow.ListJobsRequest.Filter.ACTIVE,
        )
        for job in self._jobs.list_jobs(request=request):
            if job.name == job_name:
                return str(job.id)
        raise TransientError(f"Dataflow job {job_name} exists but is not listed yet")

    def get(self, job_id: str) -> JobStatus:
        """The job's state as Cascade's ``JobStatus``."""
        request = dataflow.GetJobRequest(
            project_id=self._layout.project, job_id=job_id, location=self._layout.region
        )
        try:
            job: Any = self._jobs.get_job(request=request)
        except TRANSIENT_ERRORS as error:
            raise TransientError(f"Dataflow get_job failed: {error}") from error
        state = _STATES.get(int(job.current_state), "queued")
        failure = f"Dataflow job {job.name} ({job_id}) failed" if state == "failed" else ""
        return JobStatus(name=job_id, state=state, error=failure)
