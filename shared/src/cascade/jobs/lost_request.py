"""When a training lock's holder will never submit its job: its train request was lost.

Shared by the train step (which takes the lock over from such a holder) and the
reconcile sweep (which publishes the request again), on the jobs floor so that the
sweep needs neither the train step nor the job runners it imports.
"""

from __future__ import annotations

from datetime import timedelta

from cascade.core.context import StepContext
from cascade.core.settings import Settings
from cascade.jobs.lock import ActiveRun

__all__ = ["TRAIN_STEP", "lost_request_after", "lost_train_request"]

TRAIN_STEP = "train"
"""The step of a run that takes the training lock and submits the job."""


def lost_request_after(settings: Settings) -> timedelta:
    """How long a reservation may wait for its run's train step before its train request
    counts as lost: two claim leases. A delivered request starts the step within
    seconds; a delivery that keeps failing is retried within that time (or dead-lettered,
    which loses it too); and a train step whose owner died is taken over by a redelivery
    one lease after its last heartbeat. Publishing a request that was not lost after all
    costs one duplicate, which the run's claim absorbs."""
    return timedelta(seconds=2 * settings.claim_lease_s)


def lost_train_request(
    ctx: StepContext, active: ActiveRun | None, *, after: timedelta | None = None
) -> str | None:
    """Why ``active`` (the lock's holder) will never submit its job unless its train
    request is published again; None while it still may, or has.

    A holder without a job is waiting for its run's train step: a follow-up the lock was
    handed to (the hand-over published its request), or a run between taking the lock
    and submitting. The request is lost when, ``after`` (default ``lost_request_after``)
    since the reservation (or the last republication), the step never started, or it is
    running with an expired claim (its owner died and no redelivery took it over).
    """
    if active is None or active.job_name is not None:
        return None
    waited = ctx.clock() - active.waiting_since()
    if waited < (lost_request_after(ctx.settings) if after is None else after):
        return None
    record = ctx.ledger.get(active.run_id)
    step = record.steps.get(TRAIN_STEP) if record is not None else None
    if step is None:
        return f"run {active.run_id} has not started its train step {waited} after reserving"
    if step.state != "running":
        return None  # it ended without a job: _stale_reason releases the lock
    claim = ctx.claims.get(active.run_id, TRAIN_STEP)
    if claim is None or (claim.state != "done" and claim.lease_expires_at <= ctx.clock()):
        return f"the train step of run {active.run_id} lost its owner ({waited} waiting)"
    return None
