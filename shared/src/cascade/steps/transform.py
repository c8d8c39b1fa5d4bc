"""transform: data was accepted; build the training snapshot and ask for training.

Bookkeeping only for now (issue 4 brings the real transform): the step is claimed and
recorded, and a train request for the run is published.
"""

from __future__ import annotations

from cascade.claims import ClaimHandle
from cascade.context import StepContext
from cascade.errors import BadRequestError
from cascade.messages import DataValidated, TrainRequest
from cascade.observability import RunLogger
from cascade.steps.runner import StepOutcome, execute_step

__all__ = ["handle_data_validated"]

STEP = "transform"


def handle_data_validated(
    ctx: StepContext, message: DataValidated, *, event_id: str
) -> StepOutcome | None:
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"data-validated for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        request = TrainRequest(
            dataset=message.dataset,
            request_id=f"run:{message.run_id}",
            run_id=message.run_id,
            reason=f"new data {message.source.uri}",
        )
        return StepOutcome(
            summary="no transform yet (transform capability not built)",
            outputs={"transform": "none"},
            messages=[request],
        )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)
