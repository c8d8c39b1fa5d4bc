"""Create-only claims: at most one delivery of an event does a step's work.

A claim is ``runs/<run_id>/claims/<step>.json``, created with ``if_generation_match=0``.
It carries a short lease that its owner renews while it works (a heartbeat, see
``steps.runner``): a delivery that finds a live claim held by another delivery raises
StepInProgressError, so the event is redelivered later rather than acknowledged; once
the lease has expired (the owner died: no heartbeat) the next delivery takes the claim
over with a generation precondition and resumes from what the claim recorded
(``submitted``: e.g. the training job it created), so work is resumed, never repeated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from cascade.core.errors import ConcurrentUpdateError, StepInProgressError
from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore

_log = logging.getLogger("cascade.core.claims")

__all__ = ["Claim", "ClaimHandle", "ClaimStore", "LeaseHeartbeat", "PublishedMessage"]

_ACQUIRE_ATTEMPTS = 3
"""Deliveries racing for one claim: after this many lost races, redeliver later."""


class PublishedMessage(BaseModel):
    """A message a finished step published, kept so reconciliation can publish it again."""

    type: str
    body: dict[str, Any]


class Claim(BaseModel):
    run_id: str
    step: str
    owner: str
    state: Literal["in_progress", "done"] = "in_progress"
    outcome: str | None = None
    takeovers: int = 0
    claimed_at: datetime
    lease_expires_at: datetime
    submitted: dict[str, Any] = Field(default_factory=dict)
    published: list[PublishedMessage] = Field(default_factory=list)


class ClaimHandle:
    """A claim this delivery holds; every write is conditional on its generation."""

    def __init__(self, store: ArtifactStore, path: str, claim: Claim, generation: int) -> None:
        self._store = store
        self._path = path
        self.claim = claim
        self.generation = generation
        self._lock = threading.Lock()  # the heartbeat writes from another thread

    @property
    def resumed(self) -> bool:
        """True when an earlier, dead owner started this step."""
        return self.claim.takeovers > 0

    def record_submission(self, **submitted: Any) -> None:
        """Persist what this step has created outside Cascade (a job name, a version)."""
        self._update(lambda claim: claim.submitted.update(submitted))

    def complete(self, outcome: str, published: list[PublishedMessage] | None = None) -> None:
        def finish(claim: Claim) -> None:
            claim.state = "done"
            claim.outcome = outcome
            claim.published = published or []

        self._update(finish)

    def renew(self, now: datetime, lease: timedelta) -> None:
        """Extend the lease to ``now + lease`` (ConcurrentUpdateError: it was taken over)."""

        def extend(claim: Claim) -> None:
            claim.lease_expires_at = now + lease

        self._update(extend)

    def release(self) -> None:
        """Give the claim up after a transient failure so a retry can start at once."""
        with self._lock:
            self._store.delete(self._path, if_generation_match=self.generation)

    def _update(self, mutate: Callable[[Claim], None]) -> None:
        with self._lock:
            mutate(self.claim)
            generation = self._store.write_json(
                self._path, self.claim, if_generation_match=self.generation
            )
            if generation is None:
                raise ConcurrentUpdateError(
                    f"claim {self._path} was taken over by another delivery (lease expired)"
                )
            self.generation = generation


class LeaseHeartbeat:
    """Renews a held claim's lease every third of the lease while a step works.

    A live owner therefore never loses its claim, however long the step runs, and a
    dead one (killed instance, crashed process) stops renewing: its claim expires one
    lease later and the next redelivery takes the step over.
    """

    def __init__(
        self, handle: ClaimHandle, *, lease: timedelta, clock: Callable[[], datetime]
    ) -> None:
        self._handle = handle
        self._lease = lease
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self._lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self._handle.renew(self._clock(), self._lease)
            except ConcurrentUpdateError as error:
                _log.error("lost the claim while working: %s", error)
                return
            except Exception as error:  # noqa: BLE001 - the next beat tries again
                _log.warning("could not renew claim lease: %s", error)


class ClaimStore:
    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def get(self, run_id: str, step: str) -> Claim | None:
        found = self._store.read_model(RunPaths(run_id).claim(step), Claim)
        return None if found is None else found[0]

    def acquire(
        self, run_id: str, step: str, *, owner: str, now: datetime, lease: timedelta
    ) -> ClaimHandle | Claim:
        """Claim ``step`` of ``run_id``.

        Returns a ClaimHandle when this delivery must do the work, or the finished
        Claim when the step is already done (a duplicate delivery: do nothing).
        Raises StepInProgressError while another delivery holds a live lease.
        """
        path = RunPaths(run_id).claim(step)

        def take(existing: Claim | None) -> Claim | None:
            if existing is None:
                return Claim(
                    run_id=run_id,
                    step=step,
                    owner=owner,
                    claimed_at=now,
                    lease_expires_at=now + lease,
                )
            if existing.state == "done":
                return None  # keep it: the step is finished
            if existing.lease_expires_at > now:
                raise StepInProgressError(
                    f"{step} of run {run_id} is in progress by {existing.owner} "
                    f"until {existing.lease_expires_at.isoformat()}"
                )
            return existing.model_copy(
                update={
                    "owner": owner,
                    "claimed_at": now,
                    "lease_expires_at": now + lease,
                    "takeovers": existing.takeovers + 1,
                }
            )

        try:
            taken = self._store.update(path, Claim, take, max_attempts=_ACQUIRE_ATTEMPTS)
        except ConcurrentUpdateError:
            raise StepInProgressError(
                f"{step} of run {run_id}: claim contended, retry later"
            ) from None
        claim = taken.value
        assert claim is not None  # take() only ever keeps an existing claim
        if claim.state == "done":
            return claim  # a duplicate delivery: the step is finished
        return ClaimHandle(self._store, path, claim, taken.generation)
