"""The per-dataset training lock: at most one training job per dataset at a time.

``datasets/<d>/training_lock.json`` records the **active** run (and, once submitted,
its job) and at most one **pending** follow-up. Every change is a read-modify-write
with a generation precondition, so concurrent train requests serialise on it:

- a request finding the lock free takes it (``active`` = its run) and submits;
- a request finding another run active is **coalesced**: the pending follow-up is
  created (its run id derived from the active run, so racing requests agree on it)
  or joined; requests keep coalescing into that one follow-up;
- when the active job finishes (success or failure event), the lock is handed to the
  follow-up (``active`` = follow-up run, not yet submitted) and a train request for it
  is published; with no follow-up the lock is freed.

A lock whose active job is already finished (its event was lost) or whose reservation
was never submitted by a run that gave up is **stale**, and is released the same way.
A reservation whose run never started its train step (its train request was lost: a
router killed with it in hand, a dead-lettered delivery) is not released, which would
drop the requests coalesced into it: its train request is published again
(``request_republished_at`` records when, so that happens once per wait).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cascade.core.errors import BadRequestError
from cascade.core.job_spec import HyperparameterValue
from cascade.core.messages import TrainRequest
from cascade.core.paths import DatasetPaths
from cascade.core.runs import run_id_for_request
from cascade.core.store import ArtifactStore

__all__ = [
    "ActiveRun",
    "Coalesced",
    "Holding",
    "PendingFollowUp",
    "RunRequest",
    "TrainingLock",
    "TrainingLockStore",
    "follow_up_request",
    "follow_up_run_id",
    "join_follow_up",
    "mark_request_republished",
    "release",
    "take_or_join",
]

ResultT = TypeVar("ResultT")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActiveRun(_Model):
    run_id: str
    request_id: str
    job_name: str | None = None
    reserved_at: datetime
    submitted_at: datetime | None = None
    handed_over_from: str | None = Field(
        None, description="The run whose finished job started this follow-up."
    )
    coalesced: list[str] = Field(default_factory=list)
    hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)
    tune: bool = False
    request_republished_at: datetime | None = Field(
        None, description="When its train request was last published again (found lost)."
    )

    def waiting_since(self) -> datetime:
        """Since when the run has been expected to start its train step."""
        return max(self.reserved_at, self.request_republished_at or self.reserved_at)


class PendingFollowUp(_Model):
    run_id: str
    request_id: str
    coalesced: list[str] = Field(default_factory=list)
    hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)
    tune: bool = False
    requested_at: datetime


class TrainingLock(_Model):
    dataset: str
    active: ActiveRun | None = None
    pending: PendingFollowUp | None = None
    updated_at: datetime | None = None


def follow_up_run_id(dataset: str, active_run_id: str) -> str:
    """The one follow-up of an active run: every coalescing request derives the same id."""
    return run_id_for_request(dataset, f"follow-up:{active_run_id}")


def follow_up_request(dataset: str, active: ActiveRun) -> TrainRequest:
    """The train request that starts a follow-up the lock was handed to (or, for a
    reservation whose request was lost, the request that starts its run again)."""
    if active.handed_over_from is None:
        reason = "the train request of the run holding the training lock, published again"
    else:
        reason = (
            f"follow-up of {active.handed_over_from}: {len(active.coalesced)} coalesced "
            "request(s), on all data accepted so far"
        )
    return TrainRequest(
        dataset=dataset,
        request_id=active.request_id,
        run_id=active.run_id,
        hyperparameters=dict(active.hyperparameters),
        tune=active.tune,
        reason=reason,
    )


def mark_request_republished(
    lock: TrainingLock, checked: ActiveRun, now: datetime
) -> ActiveRun | None:
    """``checked`` lost its train request: if it still holds the lock without a job,
    record that its request is published again now; the entry to publish, else None."""
    if lock.active is None or lock.active.job_name is not None:
        return None
    if not _same_active(lock.active, checked):
        return None
    if lock.active.request_republished_at != checked.request_republished_at:
        return None  # someone else republished it since it was checked
    lock.active.request_republished_at = now
    lock.updated_at = now
    return lock.active


def release(lock: TrainingLock, run_id: str, now: datetime) -> ActiveRun | None:
    """``run_id``'s job is over: hand the lock to the pending follow-up, or free it.

    Returns the follow-up now holding the lock (its train request must be published).
    Idempotent: releasing again after a hand-over returns the same follow-up.
    """
    active = lock.active
    if active is not None and active.handed_over_from == run_id and active.job_name is None:
        return active
    if active is None or active.run_id != run_id:
        return None
    pending = lock.pending
    lock.pending = None
    lock.active = None
    lock.updated_at = now
    if pending is None:
        return None
    lock.active = ActiveRun(
        run_id=pending.run_id,
        request_id=pending.request_id,
        reserved_at=now,
        handed_over_from=run_id,
        coalesced=list(pending.coalesced),
        hyperparameters=dict(pending.hyperparameters),
        tune=pending.tune,
    )
    return lock.active


@dataclass(frozen=True)
class RunRequest:
    """A run that wants the dataset's lock, with what its job should train with."""

    run_id: str
    request_id: str
    hyperparameters: dict[str, HyperparameterValue]
    tune: bool


@dataclass(frozen=True)
class Holding:
    """This run holds the dataset's lock and may submit."""

    active: ActiveRun


@dataclass(frozen=True)
class Coalesced:
    """Another run's job is active: this request joined its one follow-up.

    ``handed_over`` is set when this request found a stale lock and handed it to the
    follow-up that was waiting, or found the holder's own train request lost (see
    ``mark_request_republished``); its train request must be published.
    """

    follow_up_run_id: str
    handed_over: ActiveRun | None = None


def take_or_join(
    lock: TrainingLock,
    request: RunRequest,
    now: datetime,
    stale_holder: ActiveRun | None,
    lost_request_of: ActiveRun | None = None,
) -> Holding | Coalesced:
    """The lock's rule, applied to the lock as read (``TrainingLockStore.update`` retries).

    The run already holding the lock keeps it; a free lock is taken; a held one is
    joined as the one pending follow-up. ``stale_holder`` is the holder found stale
    before this update: released (and handed over) only if it still holds the lock.
    ``lost_request_of`` is the holder found to have lost its train request: if it still
    holds the lock, the decision hands it its request again.
    """
    if lock.active is not None and lock.active.run_id == request.run_id:
        return Holding(lock.active)
    handed_over = None
    if stale_holder is not None and _same_active(lock.active, stale_holder):
        assert lock.active is not None
        handed_over = release(lock, lock.active.run_id, now)
    if lock.active is None:
        lock.active = ActiveRun(
            run_id=request.run_id,
            request_id=request.request_id,
            reserved_at=now,
            hyperparameters=dict(request.hyperparameters),
            tune=request.tune,
        )
        lock.updated_at = now
        return Holding(lock.active)
    follow_up = join_follow_up(lock, request, now)
    if handed_over is None and lost_request_of is not None:
        handed_over = mark_request_republished(lock, lost_request_of, now)
    return Coalesced(follow_up, handed_over)


def _same_active(active: ActiveRun | None, checked: ActiveRun | None) -> bool:
    if active is None or checked is None:
        return False
    return (active.run_id, active.job_name) == (checked.run_id, checked.job_name)


def join_follow_up(lock: TrainingLock, request: RunRequest, now: datetime) -> str:
    """Add ``request`` to the held lock's one pending follow-up run; its run id."""
    assert lock.active is not None
    pending = lock.pending or PendingFollowUp(
        run_id=follow_up_run_id(lock.dataset, lock.active.run_id),
        request_id=f"follow-up:{lock.active.run_id}",
        requested_at=now,
    )
    if pending.run_id == request.run_id:
        raise BadRequestError(
            f"run {request.run_id} is the pending follow-up of {lock.active.run_id}; it "
            "starts by itself when that run's job finishes"
        )
    if request.run_id not in pending.coalesced:
        pending.coalesced.append(request.run_id)
        pending.hyperparameters.update(request.hyperparameters)
        pending.tune = pending.tune or request.tune
    lock.pending = pending
    lock.updated_at = now
    return pending.run_id


class TrainingLockStore:
    """Optimistic read-modify-write of one dataset's lock object."""

    def __init__(self, store: ArtifactStore, dataset: str) -> None:
        self._store = store
        self.dataset = dataset
        self.name = f"{DatasetPaths(dataset).root}/training_lock.json"

    def read(self) -> tuple[TrainingLock, int]:
        """The lock and its generation (0: no lock object yet, i.e. free)."""
        found = self._store.read_model(self.name, TrainingLock)
        if found is None:
            return TrainingLock(dataset=self.dataset), 0
        return found

    def update(self, mutate: Callable[[TrainingLock], ResultT]) -> ResultT:
        """Apply ``mutate`` and write the lock back unless it changed meanwhile.

        ``mutate`` may run several times (once per lost race) and returns the decision
        it took on the lock it was given; the decision of the run that was written (or
        that left the lock as it was) is returned.
        """
        decisions: list[ResultT] = []

        def change(current: TrainingLock | None) -> TrainingLock:
            lock = TrainingLock(dataset=self.dataset) if current is None else current
            decisions.append(mutate(lock))
            return lock

        self._store.update(self.name, TrainingLock, change)
        return decisions[-1]
