"""Create-only claims and results: at most one delivery of an event does a step's work.

A claim is ``runs/<run_id>/claims/<step>.json``, created with ``if_generation_match=0``.
It carries a short lease that its owner renews while it works (a heartbeat, see
``steps.runner``): a delivery that finds a live claim held by another delivery raises
StepInProgressError, so the event is redelivered later rather than acknowledged; once
the lease has expired (the owner died: no heartbeat) the next delivery takes the claim
over with a generation precondition and resumes from what the claim recorded
(``submitted``: e.g. the training job it created), so work is resumed, never repeated.
A failed attempt releases its claim (one write: ``released``, the error kept) and the
next delivery takes it at once, afresh.

A step's outcome is ``runs/<run_id>/results/<step>.json`` (``StepResult``), created
create-only once by ``ClaimHandle.finish``: its existence means the step is done. Each
object is written by one writer at a time, a few times per step at most, so a step's
bookkeeping never waits out Cloud Storage's limit of about one mutation per second of
one object name (docs/design.md, "Run records").
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

__all__ = [
    "ATTEMPT_ERROR_PREFIX",
    "Claim",
    "ClaimHandle",
    "ClaimStore",
    "LeaseHeartbeat",
    "PublishedMessage",
    "StepResult",
]

ATTEMPT_ERROR_PREFIX = "attempt failed (will retry): "
"""How a step's record says its last attempt failed and the event will be redelivered."""

_ACQUIRE_ATTEMPTS = 3
"""Deliveries racing for one claim: after this many lost races, redeliver later."""


class PublishedMessage(BaseModel):
    """A message a finished step published, kept so reconciliation can publish it again."""

    type: str
    body: dict[str, Any]


class StepResult(BaseModel):
    """A finished step: ``runs/<run_id>/results/<step>.json``, written once."""

    run_id: str
    step: str
    owner: str
    state: Literal["succeeded", "rejected", "failed"]
    summary: str = ""
    error: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    duration_s: float
    attempts: int = 1
    submitted: dict[str, Any] = Field(default_factory=dict)
    """What the claim recorded (a job name, a Beam job id), kept for reconciliation."""
    published: list[PublishedMessage] = Field(default_factory=list)
    run_state: Literal["succeeded", "rejected", "failed"] | None = None
    """The state this step ended the run in; None when the run goes on."""


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
    attempts: int = 1
    """Deliveries that took this claim (the first, retries after a release, takeovers)."""
    released: bool = False
    """The last attempt failed and gave the claim up: the next delivery takes it at once."""
    last_error: str | None = None
    """Why the last released attempt failed."""
    result: StepResult | None = Field(default=None, exclude=True)
    """The step's result when it is done (read from ``results/``, never stored here)."""

    @classmethod
    def of_result(cls, result: StepResult) -> Claim:
        """The done claim a finished step's result stands for."""
        return cls(
            run_id=result.run_id,
            step=result.step,
            owner=result.owner,
            state="done",
            outcome=result.state,
            claimed_at=result.started_at,
            lease_expires_at=result.finished_at,
            submitted=result.submitted,
            published=result.published,
            attempts=result.attempts,
            result=result,
        )


class ClaimHandle:
    """A claim this delivery holds; every write is conditional on its generation."""

    def __init__(
        self,
        store: ArtifactStore,
        path: str,
        claim: Claim,
        generation: int,
        *,
        result_path: str | None = None,
    ) -> None:
        self._store = store
        self._path = path
        self._result_path = result_path
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
        """Mark the claim itself done (a claim without a result object: extractions)."""

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

    def finish(self, result: StepResult) -> StepResult:
        """Create the step's result (create-only): the step is done. Returns the stored
        result: ``result``, or the one a slow earlier owner created first (its work
        stands; this delivery's duplicate is absorbed downstream)."""
        if self._result_path is None:
            raise ValueError(f"claim {self._path} has no result object")
        data = result.model_dump_json(indent=2).encode()
        for _ in range(_ACQUIRE_ATTEMPTS):
            if self._store.create(self._result_path, data) is not None:
                return result
            found = self._store.read_model(self._result_path, StepResult)
            if found is not None:
                return found[0]
        raise ConcurrentUpdateError(f"{self._result_path} kept appearing and vanishing")

    def release(self, error: str | None = None, *, now: datetime | None = None) -> None:
        """Give the claim up after a transient failure so a retry can start at once.

        A claim with a result object is written once, released: its lease ends ``now``,
        ``error`` is kept for the run record and the dead-letter reason, and what it had
        submitted is forgotten, so the retry starts afresh (``resumed`` stays False).
        Without a result object (extractions) the claim is deleted. Nothing happens when
        another delivery has taken the claim over meanwhile.
        """
        with self._lock:
            if self._result_path is None:
                self._store.delete(self._path, if_generation_match=self.generation)
                return
            released = self.claim.model_copy(
                update={
                    "released": True,
                    "last_error": error,
                    "submitted": {},
                    "lease_expires_at": now or self.claim.claimed_at,
                }
            )
            written = self._store.write_json(
                self._path, released, if_generation_match=self.generation
            )
            if written is not None:
                self.claim, self.generation = released, written

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
        """The step's claim: done (``outcome``, ``published``, ``submitted`` and
        ``result`` from its result) when the step finished, else as its owner left it."""
        result = self.result(run_id, step)
        if result is not None:
            return Claim.of_result(result)
        found = self._store.read_model(RunPaths(run_id).claim(step), Claim)
        return None if found is None else found[0]

    def result(self, run_id: str, step: str) -> StepResult | None:
        """The step's result; None while it has not finished."""
        found = self._store.read_model(RunPaths(run_id).result(step), StepResult)
        return None if found is None else found[0]

    def acquire(
        self, run_id: str, step: str, *, owner: str, now: datetime, lease: timedelta
    ) -> ClaimHandle | Claim:
        """Claim ``step`` of ``run_id``.

        Returns a ClaimHandle when this delivery must do the work, or the finished
        Claim when the step is already done (a duplicate delivery: do nothing).
        Raises StepInProgressError while another delivery holds a live lease.
        One claim write: a new claim, a released one retaken (``attempts`` + 1, afresh)
        or an expired one taken over (``takeovers`` + 1, resuming what it submitted).
        """
        done = self.result(run_id, step)
        if done is not None:
            return Claim.of_result(done)
        paths = RunPaths(run_id)
        path = paths.claim(step)
        taken_from: list[Claim | None] = []

        def take(existing: Claim | None) -> Claim | None:
            taken_from[:] = [existing]
            if existing is None:
                return Claim(
                    run_id=run_id,
                    step=step,
                    owner=owner,
                    claimed_at=now,
                    lease_expires_at=now + lease,
                )
            if existing.state == "done":
                return None  # a claim finished by an earlier version: keep it
            if existing.released:
                return existing.model_copy(
                    update={
                        "owner": owner,
                        "claimed_at": now,
                        "lease_expires_at": now + lease,
                        "attempts": existing.attempts + 1,
                        "released": False,
                        "takeovers": 0,
                    }
                )
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
                    "attempts": existing.attempts + 1,
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
        if taken_from and taken_from[0] is not None:
            done = self.result(run_id, step)  # a slow owner may have just finished
            if done is not None:
                return Claim.of_result(done)
        return ClaimHandle(
            self._store, path, claim, taken.generation, result_path=paths.result(step)
        )
