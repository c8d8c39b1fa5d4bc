"""train: a train request arrived (from transform, Pub/Sub or the HTTP entry point).

Bookkeeping only for now (issue 4 brings job submission): a request without a run id
starts a run derived from its request id, the step is claimed and recorded, and
``model-trained`` is published with no model.
"""

from __future__ import annotations

from cascade.claims import ClaimHandle
from cascade.context import StepContext
from cascade.messages import ModelTrained, TrainRequest
from cascade.observability import RunLogger
from cascade.runs import RunRecord, Trigger, run_id_for_request
from cascade.steps.runner import StepOutcome, execute_step

__all__ = ["handle_train_request"]

STEP = "train"


def handle_train_request(
    ctx: StepContext, request: TrainRequest, *, event_id: str
) -> StepOutcome | None:
    request_id = request.request_id or f"message:{event_id}"
    run_id = request.run_id or run_id_for_request(request.dataset, request_id)
    now = ctx.clock()
    run = ctx.ledger.get(run_id) or RunRecord(
        run_id=run_id,
        dataset=request.dataset,
        trigger=Trigger(kind="request", request_id=request_id, event_id=event_id),
        created_at=now,
        updated_at=now,
    )

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        return StepOutcome(
            summary="no training job yet (training capability not built)",
            outputs={"job": "none", "request_id": request_id},
            messages=[ModelTrained(dataset=request.dataset, run_id=run_id)],
        )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)
