"""What a run record says, in words a person reads: verdicts, model version, durations.

Pure functions of a ``RunRecord``, shared by ``cascade status`` and ``cascade demo``.
They read what the steps record (``cascade.steps.*``): the validate step ends
``succeeded`` (accepted) or ``rejected`` (quarantined); evaluate records its
``verdict``; deploy records the ``version`` and whether it was ``promoted``; the run's
lineage gets ``deployed_version`` once a version serves all traffic.
"""

from __future__ import annotations

import posixpath

from cascade.core.runs import RunRecord

__all__ = [
    "STEPS",
    "deploy_result",
    "evaluation_verdict",
    "model_version",
    "step_duration_s",
    "training_job_pending",
    "trigger_label",
    "validation_verdict",
]

STEPS = ("validate", "transform", "train", "training_job", "evaluate", "deploy")
"""Every step a run can have, in the order they happen (``training_job`` is the job's end)."""


def trigger_label(record: RunRecord) -> str:
    """The landed file's name (upload runs) or the request id (train requests)."""
    if record.trigger.kind == "request":
        return record.trigger.request_id or "request"
    path = record.trigger.uri.removeprefix("gs://").partition("/")[2]
    return posixpath.basename(path.partition("#")[0]) or record.trigger.uri


def step_duration_s(record: RunRecord, step: str) -> float | None:
    """The step's duration; for ``training_job``, the job's: from submission to its end.

    The ``training_job`` step itself only records the job's end (milliseconds); the
    ``train`` step finished when the job was submitted.
    """
    found = record.steps.get(step)
    if found is None:
        return None
    submitted = record.steps.get("train")
    if step == "training_job" and submitted is not None and submitted.finished_at is not None:
        if found.finished_at is None:
            return None
        return max((found.finished_at - submitted.finished_at).total_seconds(), 0.0)
    return found.duration_s


def training_job_pending(record: RunRecord) -> bool:
    """The run submitted a training job whose end is not recorded yet."""
    train = record.steps.get("train")
    if train is None or train.state != "succeeded" or "job_name" not in train.outputs:
        return False
    job = record.steps.get("training_job")
    return job is None or job.state == "running"


def validation_verdict(record: RunRecord) -> str:
    """``accepted``, ``quarantined``, ``unreadable``, ``validating``; empty if not validated."""
    step = record.validation
    if step is None:
        return ""
    return {
        "succeeded": "accepted",
        "rejected": "quarantined",
        "failed": "unreadable",
    }.get(step.state, "validating")


def evaluation_verdict(record: RunRecord) -> str:
    """The evaluate step's verdict (``blessed``, ``not_blessed``, ...); empty if none."""
    step = record.steps.get("evaluate")
    if step is None:
        return ""
    if step.state == "running":
        return "evaluating"
    return str(step.outputs.get("verdict") or step.state)


def deploy_result(record: RunRecord) -> str:
    """``promoted v3``, ``rolled back v3``, ``deploy failed``; empty if not deployed."""
    step = record.steps.get("deploy")
    if step is None:
        return ""
    if step.state == "running":
        return "deploying"
    version = step.outputs.get("version")
    if version is None:
        return f"deploy {step.state}"
    return f"{'promoted' if step.outputs.get('promoted') else 'rolled back'} v{version}"


def model_version(record: RunRecord) -> str:
    """The version this run's model serves as, or what became of its model."""
    deployed = record.lineage.get("deployed_version")
    if deployed is not None:
        return f"v{deployed}"
    train = record.steps.get("train")
    if train is not None and train.outputs.get("coalesced_into"):
        return f"trained by {train.outputs['coalesced_into']}"
    deploy = record.steps.get("deploy")
    if deploy is not None and deploy.outputs.get("version") is not None:
        return f"v{deploy.outputs['version']} (rolled back)"
    job = record.steps.get("training_job")
    if job is not None and job.state == "succeeded":
        return "candidate, not deployed"
    return ""
