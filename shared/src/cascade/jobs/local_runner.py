"""``LocalJobRunner``: the ``JobRunner`` that talks to the local job service over HTTP.

The service (``python -m cascade.localcloud.job_service``) plays Vertex AI on the
laptop: ``POST /v1/jobs`` submits (idempotent by request id), ``GET /v1/jobs/<id>``
reads a job, ``POST /v1/jobs/<id>:cancel`` cancels it, ``GET /v1/jobs`` lists them.
Job names look like Vertex AI's (``projects/<p>/locations/local/customJobs/<id>``).
The service announces a job's end as Vertex AI's log sink does (a log entry on
``job-events``); a tuning job's best trial is announced by the training_job step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field

from cascade.core.job_service_http import call_job_service
from cascade.core.job_spec import (
    TERMINAL_STATES,
    HyperparameterValue,
    JobState,
    JobStatus,
    TrainingJobSpec,
)
from cascade.jobs.records import job_id_of

__all__ = ["LocalJob", "LocalJobRunner", "SubmitJobRequest"]


class LocalJob(BaseModel):
    """A job as the local job service stores and returns it (its wire record)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    name: str
    request_id: str
    kind: Literal["custom", "tuning"]
    spec: TrainingJobSpec
    state: JobState = "queued"
    error: str = ""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model_dir: str | None = None
    best_trial_id: str | None = None
    best_metric: float | None = None
    best_hyperparameters: dict[str, HyperparameterValue] | None = None
    trials_completed: int = 0
    trials_failed: int = 0
    pids: list[int] = Field(default_factory=list)
    cancel_requested: bool = False
    announced: bool = False

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    def status(self) -> JobStatus:
        return JobStatus(
            name=self.name,
            state=self.state,
            error=self.error,
            model_dir=self.model_dir,
            best_hyperparameters=self.best_hyperparameters,
            created_at=self.created_at,
            finished_at=self.finished_at,
            best_trial_id=self.best_trial_id,
            best_metric=self.best_metric,
        )


class SubmitJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: TrainingJobSpec
    request_id: str


class LocalJobRunner:
    publishes_tuning_result = False

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._session = requests.Session()

    def submit(self, spec: TrainingJobSpec, *, request_id: str) -> str:
        body = SubmitJobRequest(spec=spec, request_id=request_id).model_dump(mode="json")
        return self._job(self._call("POST", "/v1/jobs", json=body)).name

    def get(self, name: str) -> JobStatus:
        return self.job(name).status()

    def job(self, name: str) -> LocalJob:
        return self._job(self._call("GET", f"/v1/jobs/{job_id_of(name)}"))

    def cancel(self, name: str) -> None:
        self._call("POST", f"/v1/jobs/{job_id_of(name)}:cancel")

    def list_jobs(self) -> list[LocalJob]:
        payload = self._call("GET", "/v1/jobs")
        return [LocalJob.model_validate(job) for job in payload.get("jobs", [])]

    @staticmethod
    def _job(payload: dict[str, Any]) -> LocalJob:
        return LocalJob.model_validate(payload)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return call_job_service(
            self._session, self.base_url, method, path, timeout_s=self._timeout_s, **kwargs
        )
