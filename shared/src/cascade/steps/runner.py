"""What a step *is*, apart from what it does: claim, record, publish, complete.

``execute_step`` wraps a step body with the run record and claim bookkeeping that
make at-least-once delivery safe:

1. the run record exists (read; created create-only on first sight), and so do its
   run-index entries (``cascade.core.run_index``: one metadata read; written
   create-only when missing, so a crash between run.json and its entries heals);
2. the step's claim is taken (one write), or the delivery is a duplicate of finished
   work (no-op), or another delivery is working (StepInProgressError: redeliver later);
   while the step works, a heartbeat renews the claim's short lease, so a crashed
   owner's step is taken over by a redelivery one lease after its last beat;
3. the body runs; a PermanentError fails the step and the run and raises an alert,
   and the event is acknowledged; any other error (also while publishing or recording)
   releases the claim (one write, the error kept on it) and propagates so the trigger
   retries;
4. the body's messages are published before the step's result is created (one
   create-only write: the step is done), so a crash in between is redelivered and
   republished (the next step's claim absorbs duplicates);
5. a step that ends the run writes run.json once (state, error), then the run-index
   entries of that end state (create-only; a crash before them is healed by the
   redelivery's step 1, which finds run.json ended); a crash before the run.json
   write is repaired by the next delivery, which finds the result. Then the end is
   announced on ``run-ended`` (``RunEnded``), from which the report function renders the
   run's HTML report. A redelivery of a step that ended the run announces it again (its
   last delivery may have died before the announcement; the report function writes
   nothing for a run that has not changed since its report).
   An announcement that cannot be published is logged, never a reason to redo the step
   (``cascade report`` renders any run's report).

So a step writes each object once (its claim, its result, run.json only when it
creates or ends the run): never the same object twice within Cloud Storage's one
mutation per second of one name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cascade.core.claims import (
    ATTEMPT_ERROR_PREFIX,
    Claim,
    ClaimHandle,
    LeaseHeartbeat,
    PublishedMessage,
    StepResult,
)
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, PermanentError
from cascade.core.messages import Alert, RunEnded, StepMessage
from cascade.core.observability import RunLogger, run_logger
from cascade.core.run_index import ensure_run_indexed, record_run_state
from cascade.core.runs import RunRecord, RunState

__all__ = ["ATTEMPT_ERROR_PREFIX", "StepOutcome", "announce_end", "execute_step"]


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
    stored = ctx.ledger.ensure(run)
    _index(ctx, stored, log)
    acquired = ctx.claims.acquire(
        run.run_id, step, owner=owner, now=ctx.clock(), lease=ctx.claim_lease
    )
    if isinstance(acquired, Claim):
        log.info("duplicate delivery: %s already %s", step, acquired.outcome)
        if acquired.result is not None and acquired.result.run_state is not None:
            if _ends_run_unrecorded(stored, acquired.result):
                _end_run(ctx, acquired.result, log)  # the last delivery died before it
            else:
                announce_end(ctx, stored, log)  # it may have died before announcing it
        return None
    try:
        with LeaseHeartbeat(acquired, lease=ctx.claim_lease, clock=ctx.clock):
            try:
                outcome = body(acquired, log)
            except PermanentError as error:
                log.error("%s failed permanently: %s", step, error)
                outcome = _failure_outcome(ctx, run, step, error)
            for message in outcome.messages:
                ctx.bus.publish(message)
            result = acquired.finish(_result_of(ctx, acquired, outcome))
    except Exception as error:
        log.warning("%s attempt failed, will be retried: %s", step, error)
        _release(ctx, acquired, error, log)
        raise
    log.info("%s %s: %s", step, outcome.state, outcome.summary)
    if result.run_state is not None:
        _end_run(ctx, result, log)
    return outcome


def _index(ctx: StepContext, run: RunRecord, log: RunLogger) -> None:
    """The run's entries in the run index (the console's list), once per run. A run id
    the system would not derive (only tests and hand-made records have one) is left out
    of the index, never a reason to fail the step."""
    try:
        ensure_run_indexed(ctx.artifacts, run)
    except BadRequestError as error:
        log.warning("run %s is not indexed: %s", run.run_id, error)


def _result_of(ctx: StepContext, handle: ClaimHandle, outcome: StepOutcome) -> StepResult:
    claim = handle.claim
    now = ctx.clock()
    return StepResult(
        run_id=claim.run_id,
        step=claim.step,
        owner=claim.owner,
        state=outcome.state,
        summary=outcome.summary,
        error=outcome.summary if outcome.state == "failed" else None,
        outputs=outcome.outputs,
        lineage=outcome.lineage,
        started_at=claim.claimed_at,
        finished_at=now,
        duration_s=round((now - claim.claimed_at).total_seconds(), 3),
        attempts=claim.attempts,
        submitted=claim.submitted,
        published=[
            PublishedMessage(type=type(message).__name__, body=message.model_dump(mode="json"))
            for message in outcome.messages
        ],
        run_state=outcome.run_state,
    )


def _ends_run_unrecorded(stored: RunRecord, result: StepResult) -> bool:
    """Whether ``result`` ended the run but run.json (as ``stored``) does not say so."""
    return result.run_state is not None and result.step not in stored.ends_recorded


def _end_run(ctx: StepContext, result: StepResult, log: RunLogger) -> None:
    """run.json's one write for a step that ends the run; then its announcement."""

    def mutate(record: RunRecord) -> None:
        if result.step in record.ends_recorded:
            return  # written already (this is a repair that raced the owner's write)
        assert result.run_state is not None
        record.state = result.run_state
        if result.state != "succeeded":
            record.error = f"{result.step}: {result.summary}"
        record.ends_recorded.append(result.step)
        record.updated_at = max(record.updated_at, result.finished_at)

    written = ctx.ledger.update(result.run_id, mutate)
    _index_state(ctx, written, log)
    announce_end(ctx, written, log)


def _index_state(ctx: StepContext, run: RunRecord, log: RunLogger) -> None:
    """The run's entries under the state its end wrote (the console's state filters),
    create-only: the end is written once, so are they."""
    try:
        record_run_state(ctx.artifacts, run)
    except BadRequestError as error:
        log.warning("run %s is not indexed as %s: %s", run.run_id, run.state, error)


def _release(ctx: StepContext, handle: ClaimHandle, error: Exception, log: RunLogger) -> None:
    try:
        handle.release(str(error), now=ctx.clock())
    except Exception as release_error:  # noqa: BLE001 - its lease expires anyway
        log.warning("could not release the claim (its lease expires instead): %s", release_error)


def announce_end(ctx: StepContext, run: RunRecord, log: logging.Logger | RunLogger) -> None:
    """Publish ``RunEnded`` for ``run`` (as run.json now holds it), best effort: the
    report it leads to is a view that ``cascade report`` can always render again."""
    if run.state == "running":
        return
    try:
        ctx.bus.publish(RunEnded(dataset=run.dataset, run_id=run.run_id, state=run.state))
    except Exception as error:  # noqa: BLE001 - the run's end is recorded; only its report waits
        log.warning("could not announce the end of run %s: %s", run.run_id, error)


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
