"""Batch prediction jobs: what one scores, and the local job service's client for them.

In the cloud a batch is a Vertex AI ``BatchPredictionJob`` (``cascade.batch.vertex``).
Locally the job service plays that part: ``POST /v1/batchPredictionJobs`` (idempotent
by request id) runs ``python -m cascade.batch.task`` for the spec as the Vertex AI jobs'
account, ``GET /v1/batchPredictionJobs[/<id>]`` reads them. Job names look like Vertex
AI's (``projects/<p>/locations/local/batchPredictionJobs/<id>``). As on Google Cloud,
where the job-events log sink forwards the ends of training jobs only, a batch job's end
is announced to nobody: its outcome is its manifest, its tables and its job record.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cascade.core.errors import BadRequestError, InvalidConfigError, TransientError, UnknownJobError
from cascade.core.job_spec import TERMINAL_STATES, JobState
from cascade.core.paths import check_dataset_name
from cascade.core.serving_config import check_batch_files, check_batch_table

__all__ = [
    "BatchJobSpec",
    "LocalBatchJob",
    "LocalBatchRunner",
    "SubmitBatchJobRequest",
    "batch_id_for",
]

_JOB_ID = r"^[0-9a-f]{16}$"


def batch_id_for(dataset: str, version: str, source_identity: str) -> str:
    """Derived, never chosen: the same source (same version of it) and model, same id."""
    digest = hashlib.sha256(json.dumps([dataset, version, source_identity]).encode()).hexdigest()
    return digest[:32]


class BatchJobSpec(BaseModel):
    """One batch: the dataset, its model version, and a table or files to score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    version: str = Field(pattern=r"^[0-9]{1,9}$")
    table: str | None = None
    files: tuple[str, ...] = ()

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        return check_dataset_name(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return None if value is None else check_batch_table(value)

    @field_validator("files")
    @classmethod
    def _files(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_batch_files(value)

    @model_validator(mode="after")
    def _one_source(self) -> BatchJobSpec:
        if (self.table is None) == (not self.files):
            raise ValueError("a batch scores a table or files, not both or neither")
        return self

    def task_arguments(self) -> list[str]:
        """``python -m cascade.batch.task`` arguments for this batch."""
        source = ["--table", self.table] if self.table is not None else ["--files", *self.files]
        return ["--dataset", self.dataset, *source, "--version", self.version]


class LocalBatchJob(BaseModel):
    """A batch job as the local job service stores and returns it."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=_JOB_ID)
    name: str
    request_id: str
    spec: BatchJobSpec
    state: JobState = "queued"
    error: str = ""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class SubmitBatchJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: BatchJobSpec
    request_id: str = Field(min_length=1, max_length=256)


class LocalBatchRunner:
    """The local job service's batch prediction jobs, over HTTP."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._session = requests.Session()

    def submit(self, spec: BatchJobSpec, *, request_id: str) -> LocalBatchJob:
        body = SubmitBatchJobRequest(spec=spec, request_id=request_id).model_dump(mode="json")
        return LocalBatchJob.model_validate(
            self._call("POST", "/v1/batchPredictionJobs", json=body)
        )

    def job(self, job_id: str) -> LocalBatchJob:
        return LocalBatchJob.model_validate(self._call("GET", f"/v1/batchPredictionJobs/{job_id}"))

    def list_jobs(self) -> list[LocalBatchJob]:
        payload = self._call("GET", "/v1/batchPredictionJobs")
        return [LocalBatchJob.model_validate(job) for job in payload.get("jobs", [])]

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(method, url, timeout=self._timeout_s, **kwargs)
        except requests.RequestException as error:
            raise TransientError(f"local job service {method} {path}: {error}") from error
        if response.status_code == 404:
            raise UnknownJobError(f"local job service has no {path.rsplit('/', 1)[-1]}")
        if response.status_code == 400:
            raise InvalidConfigError(f"local job service refused the batch: {response.text}")
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"local job service {method} {path}: {response.status_code}")
        if response.status_code >= 300:
            raise BadRequestError(f"local job service {method} {path}: {response.text}")
        payload = response.json()
        if not isinstance(payload, dict):
            raise TransientError(f"local job service {method} {path}: not a JSON object")
        return payload
