"""The index of Beam jobs, and what their outputs say.

A Dataflow job message (``resource.type "dataflow_step"``) names only the job
(``resource.labels.job_id``); the index ``jobs/dataflow/<job_id>.json``, written by the
step that launches the job, says which kind of job it is (which step its end
finishes), which run, which input object (bucket, name, generation), which content
digest and which output folder it is for:

- ``validate_statistics`` (validate): the landed file; the pipeline
  (``cascade.beam.pipeline``) writes ``statistics.pb`` then ``result.json`` into the
  folder: ``{"status": "ok", "num_examples": N, "blocks": B}`` or ``{"status":
  "bad_input", "message": "..."}``;
- ``transform_split`` (transform): the ``MaterializeRequest`` the step stored
  (``dataflow/inputs/<run>/materialize.json``) and the SHA-256 of its bytes; the
  pipeline (``cascade.beam.materialize``) writes the shards then ``result.json``
  (``MaterializeResult``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from cascade.core.job_spec import JobStatus
from cascade.core.messages import ObjectRef
from cascade.core.store import ArtifactStore
from cascade.jobs.beam_spec import BeamSpec

__all__ = [
    "RESULT_NAME",
    "STATISTICS_NAME",
    "BeamJobKind",
    "BeamJobRecord",
    "BeamResult",
    "BeamRunner",
    "beam_job_record_name",
    "beam_output_folder",
    "materialize_output_folder",
    "materialize_request_name",
    "read_beam_job_record",
    "write_beam_job_record",
]

STATISTICS_NAME = "statistics.pb"
"""The pipeline's statistics file (``cascade.beam.pipeline.STATISTICS_NAME``)."""
RESULT_NAME = "result.json"
"""The pipeline's last output (``cascade.beam.pipeline.RESULT_NAME``)."""
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""Dataflow's job ids (``2026-12-01_01_23_45-123…``) and the local job service's (hex)."""


BeamJobKind = Literal["validate_statistics", "transform_split"]
"""Which step a Beam job's end finishes (the step's name)."""


class BeamRunner(Protocol):
    """Launches and follows Beam jobs: ``DataflowBeamRunner`` in the cloud,
    ``LocalBeamRunner`` (the local job service) on a laptop."""

    def submit(self, spec: BeamSpec) -> str:
        """Launch the job; its id (a job of the run and kind already active is found,
        not doubled)."""
        ...

    def get(self, job_id: str) -> JobStatus:
        """The job's state."""
        ...


class BeamJobRecord(BaseModel):
    """One launched Beam job: a validate step's statistics, or a transform step's split.

    ``kind`` says which step the job's end finishes
    (``cascade.steps.beam_completion.finish_dataflow_job`` dispatches on it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: BeamJobKind = "validate_statistics"
    job_id: str
    job_name: str
    run_id: str
    dataset: str
    source: ObjectRef
    """What the job reads: the landed object (its generation) a statistics job
    summarises; the stored ``MaterializeRequest`` (its generation) of a split."""
    content_digest: str
    """The SHA-256 of ``source``'s bytes, computed by the step before the launch."""
    output: str
    """Name (in the artifacts bucket) of the folder the job writes its outputs to."""
    submitted_at: datetime
    record_fields: list[str] | None = None
    """A statistics job of a stream file: the fields its records may hold, as given to
    the job (``BeamStatisticsSpec.record_fields``), so the end splits out the same
    records."""


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


def materialize_output_folder(run_id: str) -> str:
    """Where a run's Beam split writes its shards and ``result.json`` (under
    ``dataflow/``, like ``beam_output_folder``)."""
    return f"dataflow/outputs/{run_id}/transform"


def materialize_request_name(run_id: str) -> str:
    """The run's ``MaterializeRequest``, stored create-only by the transform step."""
    return f"dataflow/inputs/{run_id}/materialize.json"


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
