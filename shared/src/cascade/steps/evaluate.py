"""evaluate: a candidate was trained, or its training job failed.

A trained candidate (``model-trained``) is judged against the dataset's evaluation
thresholds (``cascade.evaluation``): ``evaluation.json`` records every check, and
``model-blessed`` or an alert is published. A training job's end (``job-events``) is recorded as
the run's ``training_job`` step: a failure marks the run failed with the job's error.
"""

from __future__ import annotations

import logging
from typing import Any

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, TransientError
from cascade.core.events import PubSubEnvelope
from cascade.core.job_spec import JobRunner, JobStatus
from cascade.core.messages import JobEvent, ModelTrained
from cascade.core.observability import RunLogger
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.store import ArtifactStore
from cascade.evaluation.judge import evaluate_candidate, next_messages
from cascade.evaluation.record import evaluation_path
from cascade.jobs.job_events import JobLogEntry, parse_job_event
from cascade.jobs.records import JobRecord, job_id_of, read_job_record
from cascade.jobs.runners import job_runner_for
from cascade.serving.uris import UriReader
from cascade.steps.runner import StepOutcome, execute_step
from cascade.steps.train_coordinator import finish_training

__all__ = ["JOB_STEP", "handle_job_event", "handle_job_event_data", "handle_model_trained"]

STEP = "evaluate"
JOB_STEP = "training_job"
_log = logging.getLogger("cascade.steps.evaluate")


def handle_model_trained(
    ctx: StepContext, message: ModelTrained, *, event_id: str
) -> StepOutcome | None:
    """Judge the candidate against the dataset's thresholds; bless it or say why not.

    Writes ``runs/<run_id>/evaluation.json``; publishes ``model-blessed`` (blessed, with
    any warnings) and an alert for warnings, a rejection or a wait for approval.
    """
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"model-trained for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        current = ctx.ledger.get(message.run_id)
        if current is not None and current.state == "failed":
            return StepOutcome(
                state="rejected",
                summary=f"not evaluated: the run already failed ({current.error})",
                outputs={"verdict": "not_evaluated"},
            )
        config = load_pipeline_config(ctx.artifacts, message.dataset).evaluation
        reader = UriReader.beside(
            ctx.artifacts, lambda bucket: ArtifactStore(ctx.storage_client, bucket)
        )
        record = evaluate_candidate(
            message, config, artifacts=ctx.artifacts, reader=reader, now=ctx.clock()
        )
        ctx.artifacts.write_json(evaluation_path(message.run_id), record)
        log.info("evaluation: %s", record.summary)
        rejected = not record.blessed
        return StepOutcome(
            state="rejected" if rejected else "succeeded",
            summary=record.summary,
            outputs={
                "verdict": record.verdict,
                "evaluation": ctx.artifacts.uri(evaluation_path(message.run_id)),
                "checks_failed": len(record.failed_checks()),
                "warnings": record.warnings(),
            },
            messages=next_messages(record, ctx.clock()),
            run_state="rejected" if record.verdict == "not_blessed" else None,
        )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)


def handle_job_event(
    ctx: StepContext,
    message: JobEvent | JobLogEntry,
    *,
    event_id: str,
    runner: JobRunner | None = None,
) -> StepOutcome | None:
    """A training job ended (or logged something): finish its run's ``training_job`` step.

    ``message`` is a ``JobEvent`` (the local job service: a job failed or was cancelled)
    or a Vertex AI job log entry forwarded by a log sink (also how the local job service
    reports success). A log entry only names the job: its run comes from the job index
    and its state from the job runner. Finishing releases the dataset's training lock
    (handing it to the coalesced follow-up), fails the run on failure, and on success of
    a Vertex AI tuning job publishes ``model-trained`` for the best trial.
    """
    jobs = runner if runner is not None else job_runner_for(ctx.settings)
    resolved = _resolve_job_event(ctx, jobs, message)
    if resolved is None:
        return None
    record, status = resolved
    run = ctx.ledger.get(record.run_id)
    if run is None:
        raise BadRequestError(f"job event for unknown run {record.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        return finish_training(ctx, record, status, log, step=JOB_STEP)

    return execute_step(ctx, run=run, step=JOB_STEP, owner=event_id, body=body)


def handle_job_event_data(ctx: StepContext, attributes: dict[str, Any], data: Any) -> None:
    """``run_cloudevent`` handler for job-events: accepts both message shapes."""
    envelope = PubSubEnvelope.from_cloudevent(attributes, data)
    handle_job_event(ctx, parse_job_event(envelope.data), event_id=envelope.event_id)


def _resolve_job_event(
    ctx: StepContext, runner: JobRunner, message: JobEvent | JobLogEntry
) -> tuple[JobRecord, JobStatus] | None:
    if isinstance(message, JobEvent):
        record = read_job_record(ctx.artifacts, job_id_of(message.job_name)) or JobRecord(
            job_name=message.job_name,
            job_id=job_id_of(message.job_name),
            run_id=message.run_id,
            dataset=message.dataset,
            kind="custom",
            model_trained_by="trainer",
            job_spec_uri="",
            submitted_at=ctx.clock(),
        )
        return record, JobStatus(name=message.job_name, state=message.state, error=message.error)
    indexed = read_job_record(ctx.artifacts, message.job_id)
    if indexed is None:
        _log.info("job-events entry for job %s, which Cascade did not submit", message.job_id)
        return None
    status = runner.get(indexed.job_name)
    if status.finished:
        return indexed, status
    if message.announces_end:
        raise TransientError(
            f"job {indexed.job_name} logged its end ({message.text!r}) but is still "
            f"{status.state}: retry until its final state is visible"
        )
    _log.info("job %s is %s; nothing to do for %r", indexed.job_name, status.state, message.text)
    return None
