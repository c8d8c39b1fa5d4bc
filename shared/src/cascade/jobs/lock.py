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
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cascade.core.errors import ConcurrentUpdateError
from cascade.core.job_spec import HyperparameterValue
from cascade.core.messages import TrainRequest
from cascade.core.paths import DatasetPaths
from cascade.core.runs import run_id_for_request
from cascade.core.store import ArtifactStore

__all__ = [
    "ActiveRun",
    "PendingFollowUp",
    "TrainingLock",
    "TrainingLockStore",
    "follow_up_request",
    "follow_up_run_id",
    "release",
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
    """The train request that starts a follow-up the lock was handed to."""
    return TrainRequest(
        dataset=dataset,
        request_id=active.request_id,
        run_id=active.run_id,
        hyperparameters=dict(active.hyperparameters),
        tune=active.tune,
        reason=(
            f"follow-up of {active.handed_over_from}: {len(active.coalesced)} coalesced "
            "request(s), on all data accepted so far"
        ),
    )


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


class TrainingLockStore:
    """Optimistic read-modify-write of one dataset's lock object."""

    def __init__(self, store: ArtifactStore, dataset: str, *, max_attempts: int = 20) -> None:
        self._store = store
        self.dataset = dataset
        self.name = f"{DatasetPaths(dataset).root}/training_lock.json"
        self._max_attempts = max_attempts

    def read(self) -> tuple[TrainingLock, int]:
        """The lock and its generation (0: no lock object yet, i.e. free)."""
        found = self._store.read_model(self.name, TrainingLock)
        if found is None:
            return TrainingLock(dataset=self.dataset), 0
        return found

    def update(self, mutate: Callable[[TrainingLock], ResultT]) -> ResultT:
        """Apply ``mutate`` and write the lock back unless it changed meanwhile.

        ``mutate`` may run several times (once per lost race) and returns the decision
        it took on the lock it was given.
        """
        for _ in range(self._max_attempts):
            lock, generation = self.read()
            decision = mutate(lock)
            if self._store.write_json(self.name, lock, if_generation_match=generation) is not None:
                return decision
        raise ConcurrentUpdateError(
            f"{self._store.uri(self.name)}: lost {self._max_attempts} update races"
        )
