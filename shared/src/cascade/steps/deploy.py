"""deploy: a blessed model goes to the endpoint.

Bookkeeping only for now (issue 5 brings the deployer and model server): the step is
claimed and recorded and the run marked finished, with nothing deployed.
"""

from __future__ import annotations

from cascade.claims import ClaimHandle
from cascade.context import StepContext
from cascade.errors import BadRequestError
from cascade.messages import ModelBlessed
from cascade.observability import RunLogger
from cascade.steps.runner import StepOutcome, execute_step

__all__ = ["handle_model_blessed"]

STEP = "deploy"


def handle_model_blessed(
    ctx: StepContext, message: ModelBlessed, *, event_id: str
) -> StepOutcome | None:
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"model-blessed for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        return StepOutcome(
            summary="nothing deployed yet (deployment capability not built)",
            outputs={"deployed": "none"},
            run_state="succeeded",
        )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)
