"""training_job: a training job ended (a job event), so its run's training step ends.

(A Beam job's end arrives on the same topic: it finishes the step that launched it
instead, validate or transform: ``cascade.steps.beam_completion.finish_dataflow_job``.)

The evaluate-job-events function receives job events: a ``JobEvent`` from the local job
service, or a Vertex AI job log entry forwarded by a log sink. Finishing the step
releases the dataset's training lock (handing it to the coalesced follow-up run, whose
train request is published), fails the run with the job's error on failure, and on
success of a Vertex AI tuning job publishes ``model-trained`` for the best trial. A
redelivered event is absorbed by the step's claim; releasing twice hands over to the
same follow-up.
"""

from __future__ import annotations

import logging
from typing import Any

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, TransientError, UnknownJobError
from cascade.core.events import PubSubEnvelope
from cascade.core.job_spec import TRAINING_FAILURE_FILE, JobRunner, JobStatus, TrainingFailure
from cascade.core.messages import JobEvent, ModelTrained, StepMessage
from cascade.core.observability import RunLogger
from cascade.jobs.beam_records import BeamRunner
from cascade.jobs.job_events import DATAFLOW_RESOURCE, JobLogEntry, parse_job_event
from cascade.jobs.lock import TrainingLockStore, follow_up_request, release
from cascade.jobs.records import JobRecord, job_id_of, read_job_record, training_folder
from cascade.jobs.runners import job_runner_for
from cascade.steps.beam_completion import finish_dataflow_job
from cascade.steps.runner import StepOutcome, execute_step
from cascade.steps.train import failure_messages

__all__ = ["JOB_STEP", "finish_training", "handle_job_event", "handle_job_event_data"]

JOB_STEP = "training_job"
_log = logging.getLogger("cascade.steps.training_job")


def handle_job_event(
    ctx: StepContext,
    message: JobEvent | JobLogEntry,
    *,
    event_id: str,
    runner: JobRunner | None = None,
    beam_runner: BeamRunner | None = None,
) -> StepOutcome | None:
    """A training job ended (or logged something): finish its run's ``training_job`` step.

    ``message`` is a ``JobEvent`` (the local job service: a job failed or was cancelled)
    or a Vertex AI job log entry forwarded by a log sink (also how the local job service
    reports success). A log entry only names the job: its run comes from the job index
    and its state from the job runner. Finishing releases the dataset's training lock
    (handing it to the coalesced follow-up), fails the run on failure, and on success of
    a Vertex AI tuning job publishes ``model-trained`` for the best trial.

    A Dataflow job message is a Beam job's: it finishes its run's validate or transform
    (``cascade.steps.beam_completion.finish_dataflow_job``).
    """
    if isinstance(message, JobLogEntry) and message.resource_type == DATAFLOW_RESOURCE:
        return finish_dataflow_job(
            ctx,
            message.job_id,
            owner=event_id,
            runner=beam_runner,
            announces_end=message.announces_end,
            message=message.text,
        )
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


def finish_training(
    ctx: StepContext,
    record: JobRecord,
    status: JobStatus,
    log: RunLogger,
    *,
    step: str,
) -> StepOutcome:
    """A job ended: free the lock (or hand it to the follow-up) and record the end.

    On success of a tuning job whose model nobody else announces (Vertex AI), publish
    ``model-trained`` for the best trial. On failure the run fails with the job's error.
    """
    locks = TrainingLockStore(ctx.artifacts, record.dataset)
    handed_over = locks.update(lambda lock: release(lock, record.run_id, ctx.clock()))
    if handed_over is not None:
        log.info("lock handed to follow-up run %s", handed_over.run_id)
    outputs: dict[str, Any] = {"job_name": record.job_name, "job_state": status.state}
    if handed_over is not None:
        outputs["follow_up"] = handed_over.run_id
    if status.state != "succeeded":
        reason = status.error
        failure = _trainer_failure(ctx, record) if status.state == "failed" else None
        if failure is not None:
            outputs["job_error"] = status.error
            reason = failure.error
        summary = f"training job {record.job_name} {status.state}: {reason}"
        return StepOutcome(
            state="failed",
            summary=summary,
            outputs=outputs,
            run_state="failed",
            messages=failure_messages(
                ctx, record.dataset, record.run_id, step, summary, handed_over
            ),
        )
    messages: list[StepMessage] = []
    if record.kind == "tuning" and record.model_trained_by == "job-events":
        messages.append(_best_trial_model(record, status))
        outputs.update(
            best_trial=status.best_trial_id,
            best_metric=status.best_metric,
            best_hyperparameters=status.best_hyperparameters,
        )
    if handed_over is not None:
        messages.append(follow_up_request(record.dataset, handed_over))
    return StepOutcome(
        summary=f"training job {record.job_name} succeeded", outputs=outputs, messages=messages
    )


def _trainer_failure(ctx: StepContext, record: JobRecord) -> TrainingFailure | None:
    """The trainer's own reason (``failure.json``), when this job's trainer wrote one:
    Vertex AI's job error only says that a replica exited non-zero."""
    found = ctx.artifacts.read_model(
        f"{training_folder(record.run_id)}/{TRAINING_FAILURE_FILE}", TrainingFailure
    )
    if found is None:
        return None
    failure = found[0]
    if failure.job not in (record.job_name, record.job_id):
        return None  # an earlier job of the same run
    return failure


def _best_trial_model(record: JobRecord, status: JobStatus) -> ModelTrained:
    if not status.model_dir:
        raise UnknownJobError(f"tuning job {record.job_name} succeeded without a best trial")
    base = status.model_dir.rstrip("/").removesuffix("/model")
    return ModelTrained(
        dataset=record.dataset,
        run_id=record.run_id,
        job_name=record.job_name,
        model_uri=status.model_dir,
        metrics_uri=f"{base}/metrics.json",
    )
