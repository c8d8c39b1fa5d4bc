"""The evaluate step's work: judge a trained candidate and say what happens next.

``evaluate_candidate`` reads metrics.json and infra_check.json, compares with the
deployed model named in ``serving.json`` and returns the ``EvaluationRecord``;
``next_messages`` turns a record into ``model-blessed`` and/or an alert.
"""

from __future__ import annotations

from datetime import datetime

from cascade.core.errors import BadInputError
from cascade.core.evaluation_config import EvaluationConfig
from cascade.core.messages import Alert, ModelBlessed, ModelTrained, StepMessage
from cascade.core.store import ArtifactStore
from cascade.evaluation.inputs import default_metrics_uri, read_evaluation_inputs
from cascade.evaluation.policy import judge
from cascade.evaluation.record import EvaluationRecord
from cascade.serving.state import deployed_model_uri
from cascade.serving.uris import UriReader

__all__ = ["evaluate_candidate", "next_messages", "summarize"]


def evaluate_candidate(
    message: ModelTrained,
    config: EvaluationConfig,
    *,
    artifacts: ArtifactStore,
    reader: UriReader,
    now: datetime,
) -> EvaluationRecord:
    """Judge the candidate of ``message``; BadInputError when there is nothing to judge."""
    if not message.model_uri:
        raise BadInputError(
            f"model-trained for run {message.run_id} names no model: training exported nothing"
        )
    metrics_uri = message.metrics_uri or default_metrics_uri(artifacts, message.run_id)
    inputs = read_evaluation_inputs(reader, metrics_uri)
    deployed = deployed_model_uri(artifacts, message.dataset)
    judgement = judge(inputs, config, deployed_model_uri=deployed)
    baseline = inputs.metrics.baseline
    record = EvaluationRecord(
        dataset=message.dataset,
        run_id=message.run_id,
        model_uri=message.model_uri,
        metrics_uri=metrics_uri,
        infra_check_uri=inputs.infra_check_uri,
        verdict=judgement.verdict,
        first_run=judgement.first_run,
        first_run_policy=config.first_run,
        deployed_model_uri=deployed,
        baseline_model_uri=None if baseline is None else baseline.model_uri,
        newest_files=inputs.metrics.newest_files,
        checks=judgement.checks,
        summary="",
        evaluated_at=now,
    )
    record.summary = summarize(record)
    return record


def summarize(record: EvaluationRecord) -> str:
    judged = [check for check in record.checks if check.verdict != "skipped"]
    blocking = [c for c in record.failed_checks() if c.tier == "blocking"]
    warnings = [c for c in record.failed_checks() if c.tier == "warning"]
    if record.verdict == "not_blessed":
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in blocking)
        return f"not blessed: {len(blocking)} blocking check(s) failed: {reasons}"
    if record.verdict == "awaiting_approval":
        return (
            f"awaiting manual approval (first run, {len(judged)} checks passed): "
            f"cascade bless {record.run_id} --reason '...'"
        )
    if record.verdict == "force_blessed" and record.override is not None:
        return f"force-blessed by {record.override.actor}: {record.override.reason}"
    if warnings:
        return f"blessed with {len(warnings)} warning(s): " + "; ".join(
            f"{c.name}: {c.detail}" for c in warnings
        )
    return f"blessed: {len(judged)} checks passed" + (" (first run)" if record.first_run else "")


def next_messages(record: EvaluationRecord, now: datetime) -> list[StepMessage]:
    """``model-blessed`` for a blessed record, an alert for warnings or a rejection."""
    messages: list[StepMessage] = []
    failed = [check.model_dump(exclude_none=True) for check in record.failed_checks()]
    details = {"evaluation": record.verdict, "failed_checks": failed}
    if record.blessed:
        messages.append(
            ModelBlessed(
                dataset=record.dataset,
                run_id=record.run_id,
                model_uri=record.model_uri,
                warnings=record.warnings() + ([] if record.override is None else [record.summary]),
            )
        )
    if record.verdict in ("blessed_with_warnings", "force_blessed", "awaiting_approval"):
        severity = "WARNING"
    elif record.verdict == "not_blessed":
        severity = "ERROR"
    else:
        return messages
    messages.append(
        Alert(
            dataset=record.dataset,
            run_id=record.run_id,
            step="evaluate",
            severity=severity,
            summary=f"{record.run_id}: {record.summary}",
            details=details,
            at=now,
        )
    )
    return messages
