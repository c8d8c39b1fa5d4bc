"""What a step *is*, apart from what it does: claim, record, publish, complete.

``execute_step`` wraps a step body with the run record and claim bookkeeping that
make at-least-once delivery safe:

1. the run record exists (created on first sight, found again on redelivery);
2. the step's claim is taken, or the delivery is a duplicate of finished work (no-op),
   or another delivery is working (StepInProgressError: redeliver later); while the
   step works, a heartbeat renews the claim's short lease, so a crashed owner's step
   is taken over by a redelivery one lease after its last beat;
3. the body runs; a PermanentError fails the step and the run and raises an alert,
   and the event is acknowledged; any other error (also while publishing or recording)
   releases the claim and propagates so the trigger retries;
4. the body's messages are published before the step is marked done, so a crash in
   between is redelivered and republished (the next step's claim absorbs duplicates);
5. a step that ends the run writes the run's HTML report (best effort: a report that
   cannot be written is logged, never a reason to redo the step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cascade.core.claims import Claim, ClaimHandle, LeaseHeartbeat, PublishedMessage
from cascade.core.context import StepContext
from cascade.core.errors import PermanentError
from cascade.core.messages import Alert, StepMessage
from cascade.core.observability import RunLogger, run_logger
from cascade.core.runs import RunRecord, RunState, StepRecord

__all__ = ["ATTEMPT_ERROR_PREFIX", "StepOutcome", "execute_step"]

ATTEMPT_ERROR_PREFIX = "attempt failed (will retry): "
"""How a step's record says its last attempt failed and the event will be redelivered."""


@dataclass
class StepOutcome:
    """What a step body produced. ``run_state`` ends the run when set."""

    state: Literal["succeeded", "rejected", "failed"] = "succeeded"
    summary: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[StepMessage] = field(default_factory=list)
    run_state: RunState | None = None
    lineage: dict[str, Any] = field(default_factory=dict)


StepBody = Callable[[ClaimHandle, RunLogger], StepOutcome]


def execute_step(
    ctx: StepContext, *, run: RunRecord, step: str, owner: str, body: StepBody
) -> StepOutcome | None:
    """Run ``body`` as ``step`` of ``run`` exactly once in effect; None for a duplicate."""
    log = run_logger(f"cascade.steps.{step}", run_id=run.run_id, step=step, dataset=run.dataset)
    ctx.ledger.ensure(run)
    acquired = ctx.claims.acquire(
        run.run_id, step, owner=owner, now=ctx.clock(), lease=ctx.claim_lease
    )
    if isinstance(acquired, Claim):
        log.info("duplicate delivery: %s already %s", step, acquired.outcome)
        return None
    _mark_started(ctx, run.run_id, step)
    try:
        with LeaseHeartbeat(acquired, lease=ctx.claim_lease, clock=ctx.clock):
            try:
                outcome = body(acquired, log)
            except PermanentError as error:
                log.error("%s failed permanently: %s", step, error)
                outcome = _failure_outcome(ctx, run, step, error)
            for message in outcome.messages:
                ctx.bus.publish(message)
            _mark_finished(ctx, run.run_id, step, outcome)
    except Exception as error:
        log.warning("%s attempt failed, will be retried: %s", step, error)
        _record_attempt_error(ctx, run.run_id, step, error)
        acquired.release()
        raise
    acquired.complete(
        outcome.state,
        published=[
            PublishedMessage(type=type(message).__name__, body=message.model_dump(mode="json"))
            for message in outcome.messages
        ],
    )
    log.info("%s %s: %s", step, outcome.state, outcome.summary)
    if outcome.run_state is not None:
        _write_report(ctx, run.run_id, log)
    return outcome


def _write_report(ctx: StepContext, run_id: str, log: RunLogger) -> None:
    from cascade.report import write_run_report  # rendering is only needed at a run's end

    try:
        log.info("run report: %s", write_run_report(ctx.artifacts, run_id))
    except Exception as error:  # noqa: BLE001 - `cascade report` can always rebuild it
        log.warning("could not write the run report: %s", error)


def _failure_outcome(
    ctx: StepContext, run: RunRecord, step: str, error: PermanentError
) -> StepOutcome:
    """A permanent error fails the step and the run, with an alert for people."""
    alert = Alert(
        dataset=run.dataset,
        run_id=run.run_id,
        step=step,
        severity="ERROR",
        summary=f"{step} failed: {error}",
        at=ctx.clock(),
    )
    return StepOutcome(state="failed", summary=str(error), messages=[alert], run_state="failed")


def _mark_started(ctx: StepContext, run_id: str, step: str) -> None:
    now = ctx.clock()

    def mutate(record: RunRecord) -> None:
        previous = record.steps.get(step)
        attempts = previous.attempts + 1 if previous else 1
        record.steps[step] = StepRecord(state="running", attempts=attempts, started_at=now)
        record.updated_at = now

    ctx.ledger.update(run_id, mutate)


def _mark_finished(ctx: StepContext, run_id: str, step: str, outcome: StepOutcome) -> None:
    now = ctx.clock()

    def mutate(record: RunRecord) -> None:
        step_record = record.steps[step]
        step_record.state = outcome.state
        step_record.finished_at = now
        step_record.duration_s = round((now - step_record.started_at).total_seconds(), 3)
        step_record.outputs = outcome.outputs
        step_record.error = outcome.summary if outcome.state == "failed" else None
        record.lineage.update(outcome.lineage)
        if outcome.run_state is not None:
            record.state = outcome.run_state
            if outcome.state != "succeeded":
                record.error = f"{step}: {outcome.summary}"
        record.updated_at = now

    ctx.ledger.update(run_id, mutate)


def _record_attempt_error(ctx: StepContext, run_id: str, step: str, error: Exception) -> None:
    def mutate(record: RunRecord) -> None:
        record.steps[step].error = f"{ATTEMPT_ERROR_PREFIX}{error}"

    try:
        ctx.ledger.update(run_id, mutate)
    except Exception:  # noqa: BLE001 - best effort: the original error is what matters
        return
