"""evaluate: a candidate was trained, or its training job failed.

Bookkeeping only for now (issue 5 brings thresholds): the step is claimed and recorded
and ``model-blessed`` published. A job failure marks the run failed with the job's
error, which is already the real behaviour.
"""

from __future__ import annotations

from cascade.claims import ClaimHandle
from cascade.context import StepContext
from cascade.errors import BadRequestError
from cascade.messages import JobEvent, ModelBlessed, ModelTrained
from cascade.observability import RunLogger
from cascade.steps.runner import StepOutcome, execute_step

__all__ = ["handle_job_event", "handle_model_trained"]

STEP = "evaluate"


def handle_model_trained(
    ctx: StepContext, message: ModelTrained, *, event_id: str
) -> StepOutcome | None:
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"model-trained for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        return StepOutcome(
            summary="no evaluation yet (evaluation capability not built)",
            outputs={"checks": "none"},
            messages=[
                ModelBlessed(
                    dataset=message.dataset, run_id=message.run_id, model_uri=message.model_uri
                )
            ],
        )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)


def handle_job_event(ctx: StepContext, message: JobEvent, *, event_id: str) -> StepOutcome | None:
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"job event for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        return StepOutcome(
            state="failed",
            summary=f"training job {message.job_name} {message.state}: {message.error}",
            outputs={"job_name": message.job_name, "job_state": message.state},
            run_state="failed",
        )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)
