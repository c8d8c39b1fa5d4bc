"""What every step finished by a Beam job does first: find the job, its run and its state.

``validate.finish_beam_job`` (a big file's statistics) and
``transform.finish_transform_job`` (a big snapshot's split) are called for a Dataflow
job message (which names only the job) and by reconcile for a run whose job's end was
never heard of. Both start the same way, here: the job index says which run (a job
Cascade did not launch, or of another kind, is ignored: never a path built from a
message); the runner says the job's state; a job still running is left alone, or, when
its message announces its end, a TransientError has the message redelivered until the
final state is visible; the job message's text is added to a failed job's reason
(Dataflow says why a job failed there, not in the job's state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, TransientError
from cascade.core.job_spec import JobStatus
from cascade.core.runs import RunRecord
from cascade.jobs.beam_records import BeamJobKind, BeamJobRecord, BeamRunner, read_beam_job_record
from cascade.jobs.beam_runners import beam_runner_for

__all__ = ["EndedJob", "ended_job"]

_log = logging.getLogger("cascade.steps.beam_job_end")


@dataclass(frozen=True)
class EndedJob:
    """A Beam job of ``kind`` that has reached a final state, and the run it serves."""

    record: BeamJobRecord
    run: RunRecord
    status: JobStatus


def ended_job(
    ctx: StepContext,
    job_id: str,
    *,
    kind: BeamJobKind,
    runner: BeamRunner | None,
    announces_end: bool,
    message: str,
) -> EndedJob | None:
    """The ended job ``job_id`` of ``kind`` with its run; None when there is nothing to
    finish (not a job Cascade launched, another kind, still running)."""
    record = read_beam_job_record(ctx.artifacts, job_id)
    if record is None or record.kind != kind:
        _log.info("Beam job %r: not a %s job Cascade launched; ignored", job_id, kind)
        return None
    jobs = runner if runner is not None else beam_runner_for(ctx.settings)
    status = jobs.get(record.job_id)
    if not status.finished:
        if announces_end:
            raise TransientError(
                f"Beam job {record.job_id} logged its end but is still {status.state}: "
                "retry until its final state is visible"
            )
        _log.info("Beam job %s is %s: nothing to do yet", record.job_id, status.state)
        return None
    run = ctx.ledger.get(record.run_id)
    if run is None:
        raise BadRequestError(f"Beam job {record.job_id} names the unknown run {record.run_id}")
    if status.state != "succeeded" and message and message not in status.error:
        status = status.model_copy(update={"error": f"{status.error} ({message})".strip()})
    return EndedJob(record, run, status)
