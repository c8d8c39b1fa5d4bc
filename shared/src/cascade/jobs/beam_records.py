"""The index of Beam statistics jobs, and what their outputs say.

A Dataflow job message (``resource.type "dataflow_step"``) names only the job
(``resource.labels.job_id``); the index ``jobs/dataflow/<job_id>.json``, written by the
validate step when it launches the job, says which run, which landed object (bucket,
name, generation), which content digest and which output folder it is for. The
pipeline (``cascade.beam.pipeline``) writes ``statistics.pb`` then ``result.json`` into
that folder: ``{"status": "ok", "num_examples": N, "blocks": B}`` or ``{"status":
"bad_input", "message": "..."}``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from cascade.core.job_spec import JobStatus
from cascade.core.messages import ObjectRef
from cascade.core.store import ArtifactStore
from cascade.jobs.beam_spec import BeamStatisticsSpec

__all__ = [
    "RESULT_NAME",
    "STATISTICS_NAME",
    "BeamJobRecord",
    "BeamResult",
    "BeamRunner",
    "beam_job_record_name",
    "beam_output_folder",
    "read_beam_job_record",
    "write_beam_job_record",
]

STATISTICS_NAME = "statistics.pb"
"""The pipeline's statistics file (``cascade.beam.pipeline.STATISTICS_NAME``)."""
RESULT_NAME = "result.json"
"""The pipeline's last output (``cascade.beam.pipeline.RESULT_NAME``)."""
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""Dataflow's job ids (``2026-12-01_01_23_45-123…``) and the local job service's (hex)."""


class BeamRunner(Protocol):
    """Launches and follows Beam statistics jobs: ``DataflowBeamRunner`` in the cloud,
    ``LocalBeamRunner`` (the local job service) on a laptop."""

    def submit(self, spec: BeamStatisticsSpec) -> str:
        """Launch the job; its id (a job of the run already active is found, not doubled)."""
        ...

    def get(self, job_id: str) -> JobStatus:
        """The job's state."""
        ...


class BeamJobRecord(BaseModel):
    """One launched Beam statistics job of a validate step.

    ``kind`` says which step the job's end finishes: another kind of Beam job (the
    transform's materialisation) gets its own kind in a union here and its own branch in
    ``cascade.steps.training_job.handle_job_event``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["validate_statistics"] = "validate_statistics"
    job_id: str
    job_name: str
    run_id: str
    dataset: str
    source: ObjectRef
    """The landed object (its generation) the job summarises."""
    content_digest: str
    """The SHA-256 of the object's bytes, computed by the step before the launch."""
    output: str
    """Name (in the artifacts bucket) of the folder the job writes its outputs to."""
    submitted_at: datetime


class BeamResult(BaseModel):
    """``result.json``: the pipeline's verdict on the file."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["ok", "bad_input"]
    num_examples: int | None = None
    message: str = ""


def beam_output_folder(run_id: str) -> str:
    """Where a run's Beam statistics job writes (under ``dataflow/`` of the artifacts
    bucket: the only prefix the workers' account may write, infra/dataflow.tf)."""
    return f"dataflow/outputs/{run_id}/validate"


def beam_job_record_name(job_id: str) -> str:
    return f"jobs/dataflow/{job_id}.json"


def write_beam_job_record(store: ArtifactStore, record: BeamJobRecord) -> None:
    store.write_json(beam_job_record_name(record.job_id), record)


def read_beam_job_record(store: ArtifactStore, job_id: str) -> BeamJobRecord | None:
    """The job's record; None for a job Cascade did not launch (or an id no launch
    could have returned: never a path built from what a message says)."""
    if not _JOB_ID.match(job_id):
        return None
    found = store.read_model(beam_job_record_name(job_id), BeamJobRecord)
    return None if found is None else found[0]
