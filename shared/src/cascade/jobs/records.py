"""Names of training artifacts, and the job index that maps a job back to its run.

A Vertex AI job-state log entry names only the job (``resource.labels.job_id``); the
index ``jobs/<job_id>.json``, written when the job is submitted, says which run and
dataset it trains and who announces its model. Labels and display names are derived
from the run id, so a resubmission after a crash finds the job it already created.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore

__all__ = [
    "DATASET_LABEL",
    "RUN_ID_LABEL",
    "JobRecord",
    "ModelTrainedBy",
    "display_name_for",
    "job_id_of",
    "job_record_name",
    "job_spec_name",
    "label_value",
    "read_job_record",
    "training_folder",
    "write_job_record",
]

RUN_ID_LABEL = "cascade_run_id"
DATASET_LABEL = "cascade_dataset"
_LABEL_MAX = 63
_NOT_LABEL = re.compile(r"[^a-z0-9_-]")

ModelTrainedBy = Literal["trainer", "runner", "job-events"]


class JobRecord(BaseModel):
    """``model_trained_by``: who publishes ``model-trained`` when the job succeeds —
    the trainer itself (a single training job), the runner (local tuning), or
    ``handle_job_event`` on the job's success event (Vertex AI tuning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_name: str
    job_id: str
    run_id: str
    dataset: str
    kind: Literal["custom", "tuning"]
    model_trained_by: ModelTrainedBy
    job_spec_uri: str
    submitted_at: datetime


def training_folder(run_id: str) -> str:
    return RunPaths(run_id).step_dir("training")


def job_spec_name(run_id: str) -> str:
    return f"{training_folder(run_id)}/job_spec.json"


def job_id_of(job_name: str) -> str:
    """The last segment of a job resource name (``…/customJobs/123`` → ``123``)."""
    return job_name.rstrip("/").rsplit("/", 1)[-1]


def job_record_name(job_id: str) -> str:
    return f"jobs/{job_id}.json"


def label_value(value: str) -> str:
    """A Cloud label value: lowercase, ``[a-z0-9_-]``, at most 63 characters.

    Longer values keep a prefix and end in a hash of the whole, so they stay unique.
    """
    cleaned = _NOT_LABEL.sub("-", value.lower())
    if len(cleaned) <= _LABEL_MAX:
        return cleaned
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return f"{cleaned[: _LABEL_MAX - 13]}-{digest}"


def display_name_for(run_id: str, *, tuning: bool) -> str:
    """Deterministic per run: the same run always names its job the same way."""
    return f"cascade-{'tune' if tuning else 'train'}-{run_id}"[:128]


def write_job_record(store: ArtifactStore, record: JobRecord) -> None:
    store.write_json(job_record_name(record.job_id), record)


def read_job_record(store: ArtifactStore, job_id: str) -> JobRecord | None:
    found = store.read_model(job_record_name(job_id), JobRecord)
    return None if found is None else found[0]
