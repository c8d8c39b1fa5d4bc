"""What arrives on ``job-events``: a ``JobEvent``, or a Cloud Logging ``LogEntry``.

On Google Cloud a log sink forwards Vertex AI's job log entries (``resource.type
"ml_job"``) and Dataflow's job messages (``resource.type "dataflow_step"``: Beam
statistics and split jobs) as LogEntry JSON whose ``resource.labels.job_id`` names the job; the
local job service publishes the same entries when a job ends (and nothing else). A log entry
says which job, not what state it is in: the handler asks the job runner for that. A
``JobEvent`` (a job's end with its state) is accepted from other publishers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from cascade.core.errors import BadRequestError
from cascade.core.messages import JobEvent

__all__ = ["DATAFLOW_RESOURCE", "JobLogEntry", "job_end_log_entry", "parse_job_event"]

_TERMINAL_TEXT = re.compile(
    r"\b(fail|failed|succeeded|success|completed|cancell?ed|worker pool stopped)\b", re.I
)
DATAFLOW_RESOURCE = "dataflow_step"
"""The resource type of Dataflow's job messages (a Beam job's)."""


class JobLogEntry(BaseModel):
    """The parts of a LogEntry about a Vertex AI job that Cascade reads."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    resource_type: str = ""
    """``ml_job`` (Vertex AI) or ``dataflow_step`` (Dataflow)."""
    severity: str = "DEFAULT"
    text: str = ""
    insert_id: str = ""

    @property
    def announces_end(self) -> bool:
        """An error entry, or one whose text speaks of the job ending."""
        return self.severity in ("ERROR", "CRITICAL", "ALERT", "EMERGENCY") or bool(
            _TERMINAL_TEXT.search(self.text)
        )


def _entry_text(entry: dict[str, Any]) -> str:
    if isinstance(entry.get("textPayload"), str):
        return str(entry["textPayload"])
    payload = entry.get("jsonPayload")
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("msg") or "")
    return ""


def _log_entry(document: dict[str, Any]) -> JobLogEntry:
    resource = document.get("resource")
    labels = resource.get("labels") if isinstance(resource, dict) else None
    job_id = labels.get("job_id") if isinstance(labels, dict) else None
    if not job_id:
        raise BadRequestError("job-events log entry without resource.labels.job_id")
    kind = resource.get("type") if isinstance(resource, dict) else None
    return JobLogEntry(
        job_id=str(job_id),
        resource_type=kind if isinstance(kind, str) else "",
        severity=str(document.get("severity") or "DEFAULT"),
        text=_entry_text(document),
        insert_id=str(document.get("insertId") or ""),
    )


def parse_job_event(data: bytes) -> JobEvent | JobLogEntry:
    """Decode a job-events message body; BadRequestError when it is neither shape."""
    try:
        document = json.loads(data)
    except ValueError as error:
        raise BadRequestError(f"job-events message is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise BadRequestError("job-events message is not a JSON object")
    if "resource" in document:
        return _log_entry(document)
    try:
        return JobEvent.model_validate(document)
    except ValidationError as error:
        raise BadRequestError(f"invalid JobEvent: {error}") from error


_END_TEXT = {
    "succeeded": ("INFO", "Job {name} completed successfully."),
    "failed": ("ERROR", "Job failed. {error}"),
    "cancelled": ("ERROR", "Job {name} was cancelled."),
}


def job_end_log_entry(
    *,
    project: str,
    job_id: str,
    job_name: str,
    state: str,
    error: str,
    timestamp: str,
    insert_id: str,
) -> dict[str, Any]:
    """The LogEntry Vertex AI writes when a job ends, as a log sink forwards it.

    The local job service publishes it so that a job's end reaches
    ``handle_job_event`` the way it does on Google Cloud: the entry names the job and
    the handler asks the job runner for its state, error and best trial.
    """
    severity, text = _END_TEXT.get(state, ("ERROR", "Job {name} ended: {error}"))
    return {
        "insertId": insert_id,
        "logName": f"projects/{project}/logs/aiplatform.googleapis.com%2Fjob",
        "resource": {
            "type": "ml_job",
            "labels": {"job_id": job_id, "project_id": project, "task_name": "service"},
        },
        "severity": severity,
        "textPayload": text.format(name=job_name, error=error).strip(),
        "timestamp": timestamp,
    }
