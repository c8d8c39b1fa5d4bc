"""Beam jobs in the local job service: Dataflow's stand-in, and its HTTP client.

The local job service takes the launch Dataflow takes — a job name and the Flex
Template's parameters (``beam_spec.launch_of``: a file's statistics or, with
``mode=materialize``, a run's split) — and refuses what
Dataflow refuses (``launch_refusal``): a job name outside Dataflow's rule, a parameter
the template does not declare, a declared one missing or not matching its regexes
(``cascade/beam/template_metadata.json``, the file ``gcloud dataflow flex-template
build`` writes into the template), a second active job of one name (ALREADY_EXISTS).
It runs ``python -m cascade.beam`` in .venv-beam with the parameters as flags and, when
the job ends, publishes on ``job-events`` the log entry Dataflow's job messages reach
that topic as (``dataflow_job_end_log_entry``).

``LocalBeamRunner`` has ``DataflowBeamRunner``'s interface: ``submit(spec) -> job id``,
``get(job id) -> JobStatus``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field

from cascade.core.errors import InvalidConfigError, TransientError
from cascade.core.job_service_http import call_job_service
from cascade.core.job_spec import JobStatus, LocalTaskJob
from cascade.jobs.beam_spec import BeamSpec, launch_of

__all__ = [
    "JOB_NAME_RULE",
    "LaunchDataflowJobRequest",
    "LocalBeamRunner",
    "LocalDataflowJob",
    "dataflow_job_end_log_entry",
    "launch_refusal",
    "template_parameters",
]

JOB_NAME_RULE = re.compile(r"^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$")
_END_TEXT = {
    "succeeded": ("INFO", "Worker pool stopped."),
    "failed": ("ERROR", "Workflow failed. Causes: {error}"),
    "cancelled": ("WARNING", "Workflow cancelled."),
}


class LocalDataflowJob(LocalTaskJob):
    """A Beam job as the local job service stores and returns it."""

    parameters: dict[str, str]
    announced: bool = False


class LaunchDataflowJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_name: str = Field(min_length=1, max_length=1024)
    parameters: dict[str, str]


@cache
def template_parameters() -> dict[str, dict[str, Any]]:
    """The template's declared parameters by name (its metadata file)."""
    text = resources.files("cascade.beam").joinpath("template_metadata.json").read_text()
    return {parameter["name"]: parameter for parameter in json.loads(text)["parameters"]}


def launch_refusal(job_name: str, parameters: dict[str, str]) -> str:
    """Why Dataflow would refuse this launch (INVALID_ARGUMENT); "" when it would not."""
    if not JOB_NAME_RULE.match(job_name):
        return f"job name {job_name!r} does not match [a-z]([-a-z0-9]{{0,1022}}[a-z0-9])?"
    declared = template_parameters()
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        return f"the template declares no parameter {', '.join(map(repr, unknown))}"
    for name, parameter in declared.items():
        value = parameters.get(name)
        if value is None:
            if not parameter.get("isOptional", False):
                return f"the template's parameter {name!r} is required"
            continue
        for pattern in parameter.get("regexes", []):
            if not re.fullmatch(pattern, value):
                return f"parameter {name!r} does not match {pattern}"
    return ""


def dataflow_job_end_log_entry(
    *, project: str, region: str, job: LocalDataflowJob, timestamp: str, insert_id: str
) -> dict[str, Any]:
    """A Dataflow job message as a log sink forwards it: it names the job
    (``resource.labels.job_id``); the handler asks the runner for the state."""
    severity, text = _END_TEXT.get(job.state, ("ERROR", "Workflow ended: {error}"))
    return {
        "insertId": insert_id,
        "logName": f"projects/{project}/logs/dataflow.googleapis.com%2Fjob-message",
        "resource": {
            "type": "dataflow_step",
            "labels": {
                "job_id": job.job_id,
                "job_name": job.name,
                "project_id": project,
                "region": region,
                "step_id": "",
            },
        },
        "severity": severity,
        "textPayload": text.format(error=job.error).strip(),
        "timestamp": timestamp,
    }


class LocalBeamRunner:
    """Beam jobs in the local job service, over HTTP (``DataflowBeamRunner``'s twin)."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._session = requests.Session()

    def submit(self, spec: BeamSpec) -> str:
        """Launch the job (a file's statistics or a run's split); its id. A job of the
        run and kind already active is found, not doubled."""
        job_name, parameters = launch_of(spec)
        request = LaunchDataflowJobRequest(job_name=job_name, parameters=parameters)
        url = f"{self.base_url}/v1/dataflowJobs"
        try:
            response = self._session.post(
                url, json=request.model_dump(mode="json"), timeout=self._timeout_s
            )
        except requests.RequestException as error:
            raise TransientError(f"local job service POST /v1/dataflowJobs: {error}") from error
        if response.status_code == 409:  # ALREADY_EXISTS: the run's job is active
            return self._active_job_id(request.job_name)
        if response.status_code == 400:
            raise InvalidConfigError(f"the local Dataflow refused the launch: {response.text}")
        if response.status_code != 200:
            raise TransientError(f"local job service launch: {response.status_code}")
        return LocalDataflowJob.model_validate(response.json()).job_id

    def _active_job_id(self, job_name: str) -> str:
        for job in self.list_jobs():
            if job.name == job_name and not job.finished:
                return job.job_id
        raise TransientError(f"Dataflow job {job_name} exists but is not listed yet")

    def job(self, job_id: str) -> LocalDataflowJob:
        return LocalDataflowJob.model_validate(self._call("GET", f"/v1/dataflowJobs/{job_id}"))

    def list_jobs(self) -> list[LocalDataflowJob]:
        payload = self._call("GET", "/v1/dataflowJobs")
        return [LocalDataflowJob.model_validate(job) for job in payload.get("jobs", [])]

    def get(self, job_id: str) -> JobStatus:
        job = self.job(job_id)
        return JobStatus(
            name=job.job_id,
            state=job.state,
            error=job.error,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return call_job_service(
            self._session,
            self.base_url,
            method,
            path,
            timeout_s=self._timeout_s,
            refused="the Beam job",
            **kwargs,
        )
