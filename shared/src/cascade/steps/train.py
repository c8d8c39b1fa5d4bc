"""train: a train request arrived (from transform, Pub/Sub or the HTTP entry point).

A request names a dataset and optionally hyperparameters, tuning on/off and a request
id (the idempotency key; without one, the Pub/Sub message id). A request from
transform continues the upload's run and trains on that run's transform; any other
request (a user's retrain, the scheduler, a coalesced follow-up) starts a run of its
own and trains on the dataset's latest transform, i.e. on all data accepted so far.

At most one training job per dataset runs at a time (``cascade.jobs.lock``): a
request arriving while one runs is coalesced into exactly one follow-up run, started
when the running job ends. The job spec goes to ``runs/<run_id>/training/job_spec.json``
and is submitted through the job runner (Vertex AI, or the local job service); the
claim records the job name, so a redelivered or resumed request finds its job.
"""

from __future__ import annotations

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.job_spec import JobRunner
from cascade.core.messages import TrainRequest
from cascade.core.observability import RunLogger
from cascade.core.runs import RunRecord, Trigger, run_id_for_request
from cascade.jobs.runners import job_runner_for
from cascade.steps.runner import StepOutcome, execute_step
from cascade.steps.train_coordinator import start_training

__all__ = ["handle_train_request"]

STEP = "train"


def handle_train_request(
    ctx: StepContext,
    request: TrainRequest,
    *,
    event_id: str,
    runner: JobRunner | None = None,
) -> StepOutcome | None:
    """``runner`` defaults to this process's (local job service or Vertex AI)."""
    request_id = request.request_id or f"message:{event_id}"
    run_id = request.run_id or run_id_for_request(request.dataset, request_id)
    request = request.model_copy(update={"request_id": request_id, "run_id": run_id})
    now = ctx.clock()
    run = ctx.ledger.get(run_id) or RunRecord(
        run_id=run_id,
        dataset=request.dataset,
        trigger=Trigger(kind="request", request_id=request_id, event_id=event_id),
        created_at=now,
        updated_at=now,
    )

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        jobs = runner if runner is not None else job_runner_for(ctx.settings)
        return start_training(ctx, jobs, request, run, claim, log)

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)
