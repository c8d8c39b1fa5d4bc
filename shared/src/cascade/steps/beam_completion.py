"""A Beam job's end on ``job-events``: finish whichever step launched it.

A Dataflow job message (``resource.type "dataflow_step"``) names only the job; its
record in the index (``jobs/dataflow/<id>.json``) says which kind of job it is:

- ``validate_statistics``: a big file's statistics; ``validate.finish_beam_job``
  finishes its run's validate;
- ``transform_split``: a run's train/eval split; ``transform.finish_transform_job``
  finishes its run's transform.

A job id that is not one Cascade launched is ignored (never a path built from a
message: ``read_beam_job_record``).
"""

from __future__ import annotations

import logging

from cascade.core.context import StepContext
from cascade.jobs.beam_records import BeamRunner, read_beam_job_record
from cascade.steps.runner import StepOutcome
from cascade.steps.transform import SPLIT_STEP, finish_transform_job
from cascade.steps.validate import finish_beam_job

__all__ = ["finish_dataflow_job"]

_log = logging.getLogger("cascade.steps.beam_completion")


def finish_dataflow_job(
    ctx: StepContext,
    job_id: str,
    *,
    owner: str,
    runner: BeamRunner | None = None,
    announces_end: bool = False,
    message: str = "",
) -> StepOutcome | None:
    """Finish the step the Beam job ``job_id`` was launched for (arguments as
    ``finish_beam_job``'s)."""
    record = read_beam_job_record(ctx.artifacts, job_id)
    if record is None:
        _log.info("Beam job %r: not a job Cascade launched; ignored", job_id)
        return None
    finish = finish_transform_job if record.kind == SPLIT_STEP else finish_beam_job
    return finish(
        ctx,
        record.job_id,
        owner=owner,
        runner=runner,
        announces_end=announces_end,
        message=message,
    )
