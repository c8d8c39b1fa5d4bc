"""Batch prediction jobs: what one scores, and the local job service's client for them.

In the cloud a batch is a Vertex AI ``BatchPredictionJob`` (``cascade.batch.vertex``).
Locally the job service plays that part: ``POST /v1/batchPredictionJobs`` (idempotent
by request id) runs ``python -m cascade.batch.task`` for the spec as the Vertex AI jobs'
account, ``GET /v1/batchPredictionJobs[/<id>]`` reads them. Job names look like Vertex
AI's (``projects/<p>/locations/local/batchPredictionJobs/<id>``). A batch job's end is
announced to nobody: its outcome is its manifest, its tables and its job record (on
Google Cloud the ``batch-collect`` sweep writes the first two: ``cascade.batch.collect``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cascade.core.job_service_http import call_job_service
from cascade.core.job_spec import LocalTaskJob
from cascade.core.paths import check_dataset_name
from cascade.core.serving_config import BatchFiles, BatchTable

__all__ = [
    "BatchJobSpec",
    "LocalBatchJob",
    "LocalBatchRunner",
    "SubmitBatchJobRequest",
    "batch_id_for",
]


def batch_id_for(dataset: str, version: str, source_identity: str) -> str:
    """Derived, never chosen: the same source (same version of it) and model, same id."""
    digest = hashlib.sha256(json.dumps([dataset, version, source_identity]).encode()).hexdigest()
    return digest[:32]


class BatchJobSpec(BaseModel):
    """One batch: the dataset, its model version, and a table or files to score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    version: str = Field(pattern=r"^[0-9]{1,9}$")
    table: BatchTable | None = None
    files: BatchFiles = ()

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        return check_dataset_name(value)

    @model_validator(mode="after")
    def _one_source(self) -> BatchJobSpec:
        if (self.table is None) == (not self.files):
            raise ValueError("a batch scores a table or files, not both or neither")
        return self

    def task_arguments(self) -> list[str]:
        """``python -m cascade.batch.task`` arguments for this batch."""
        source = ["--table", self.table] if self.table is not None else ["--files", *self.files]
        return ["--dataset", self.dataset, *source, "--version", self.version]


class LocalBatchJob(LocalTaskJob):
    """A batch job as the local job service stores and returns it."""

    request_id: str
    spec: BatchJobSpec


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
        return call_job_service(
            self._session,
            self.base_url,
            method,
            path,
            timeout_s=self._timeout_s,
            refused="the batch",
            **kwargs,
        )
