"""Handing the training lock over when a job ends: idempotent, exact, and never to the
wrong run.

A job event releases the dataset's lock and hands it to the pending follow-up, whose
train request the step then publishes. A publish that fails makes Pub/Sub redeliver the
event; the redelivery must find the hand-over already made and publish the same
follow-up request, or the requests coalesced into it are lost. The lock's other rules
are checked on the lock itself: a stale holder is released only while it still holds
the lock, a request joins the one follow-up once, and the loser of a race for a free
lock coalesces instead of believing it holds the lock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.messages import StepMessage, TrainRequest
from cascade.core.runs import run_id_for_request
from cascade.jobs.lock import (
    ActiveRun,
    Coalesced,
    Holding,
    PendingFollowUp,
    RunRequest,
    TrainingLock,
    TrainingLockStore,
    follow_up_request,
    follow_up_run_id,
    mark_request_republished,
    release,
    take_or_join,
)
from cascade.steps.train import handle_train_request
from cascade.steps.training_job import JOB_STEP
from tests.unit.jobs.fakes import FakeJobRunner, end_job, point_latest_transform

DATASET = "credit"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=30)


class PublishFailsOnce(RecordingBus):
    """A bus whose first publish of a ``TrainRequest`` fails, as a Pub/Sub outage would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: list[StepMessage] = []

    def publish(self, message: StepMessage) -> str:
        if isinstance(message, TrainRequest) and not self.failed:
            self.failed.append(message)
            raise ConnectionError("publishing to cascade-train-requests: 503 unavailable")
        return super().publish(message)


@pytest.fixture
def runner() -> FakeJobRunner:
    return FakeJobRunner()


@pytest.fixture(autouse=True)
def _transformed(step_context: StepContext) -> None:
    point_latest_transform(step_context, DATASET)


def _request(request_id: str, **fields: object) -> TrainRequest:
    return TrainRequest.model_validate({"dataset": DATASET, "request_id": request_id, **fields})


def _run_id(request_id: str) -> str:
    return run_id_for_request(DATASET, request_id)


def _active(run_id: str, job_name: str | None = None, **fields: object) -> ActiveRun:
    return ActiveRun.model_validate(
        {
            "run_id": run_id,
            "request_id": run_id,
            "job_name": job_name,
            "reserved_at": T0,
            **fields,
        }
    )


def _wanting(run_id: str, **fields: object) -> RunRequest:
    values: dict[str, object] = {"hyperparameters": {}, "tune": False, **fields}
    return RunRequest(
        run_id=run_id,
        request_id=f"request-of-{run_id}",
        hyperparameters=values["hyperparameters"],  # type: ignore[arg-type]
        tune=bool(values["tune"]),
    )


def _held_with_follow_up() -> TrainingLock:
    """Run a's job is running; b and c are coalesced into its follow-up."""
    return TrainingLock(
        dataset=DATASET,
        active=_active("credit-a", "jobs/1"),
        pending=PendingFollowUp(
            run_id=follow_up_run_id(DATASET, "credit-a"),
            request_id="follow-up:credit-a",
            coalesced=["credit-b", "credit-c"],
            hyperparameters={"dropout": 0.3},
            tune=True,
            requested_at=T0,
        ),
        updated_at=T0,
    )


# -- the job event's hand-over, through the step ---------------------------------------


def test_a_job_event_redelivered_after_a_failed_publish_still_starts_the_follow_up(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    bus = PublishFailsOnce()
    ctx = StepContext(
        settings=step_context.settings,
        artifacts=step_context.artifacts,
        ledger=step_context.ledger,
        claims=step_context.claims,
        bus=bus,
        clock=step_context.clock,
    )
    handle_train_request(ctx, _request("a"), event_id="ma", runner=runner)
    handle_train_request(ctx, _request("b", tune=True), event_id="mb", runner=runner)
    follow_up = follow_up_run_id(DATASET, _run_id("a"))

    with pytest.raises(ConnectionError):
        end_job(ctx, runner, _run_id("a"), "log-a")
    lock, _ = TrainingLockStore(ctx.artifacts, DATASET).read()
    assert lock.active is not None
    assert (lock.active.run_id, lock.active.handed_over_from) == (
        follow_up,
        _run_id("a"),
    )
    assert bus.of_type(TrainRequest) == []

    end_job(ctx, runner, _run_id("a"), "log-a")  # Pub/Sub redelivers the event

    [started] = bus.of_type(TrainRequest)
    assert isinstance(started, TrainRequest)
    assert (started.run_id, started.request_id, started.tune) == (
        follow_up,
        f"follow-up:{_run_id('a')}",
        True,
    )
    assert started == bus.failed[0]
    run = ctx.ledger.get(_run_id("a"))
    assert run is not None
    assert run.steps[JOB_STEP].state == "succeeded"
    assert run.steps[JOB_STEP].outputs["follow_up"] == follow_up
    handle_train_request(ctx, started, event_id="m-follow", runner=runner)
    assert [spec.run_id for spec in runner.submitted] == [_run_id("a"), follow_up]


# -- release: the hand-over itself -------------------------------------------------------


def test_release_hands_the_lock_to_the_follow_up_with_everything_coalesced_into_it() -> None:
    lock = _held_with_follow_up()

    handed = release(lock, "credit-a", LATER)

    assert handed is not None
    assert handed is lock.active
    assert handed == ActiveRun(
        run_id=follow_up_run_id(DATASET, "credit-a"),
        request_id="follow-up:credit-a",
        reserved_at=LATER,
        handed_over_from="credit-a",
        coalesced=["credit-b", "credit-c"],
        hyperparameters={"dropout": 0.3},
        tune=True,
    )
    assert lock.pending is None
    assert lock.updated_at == LATER
    request = follow_up_request(DATASET, handed)
    assert request.reason == (
        "follow-up of credit-a: 2 coalesced request(s), on all data accepted so far"
    )


def test_releasing_again_after_the_hand_over_returns_the_same_follow_up() -> None:
    lock = _held_with_follow_up()
    first = release(lock, "credit-a", LATER)
    assert first is not None
    before = lock.model_copy(deep=True)

    again = release(lock, "credit-a", LATER + timedelta(minutes=5))

    assert again == first
    assert lock == before


def test_a_release_after_the_follow_up_submitted_its_job_hands_over_nothing() -> None:
    lock = _held_with_follow_up()
    handed = release(lock, "credit-a", LATER)
    assert handed is not None
    handed.job_name = "jobs/2"  # the follow-up's train step submitted its job
    before = lock.model_copy(deep=True)

    assert release(lock, "credit-a", LATER + timedelta(minutes=5)) is None
    assert lock == before


def test_a_release_by_a_run_that_does_not_hold_the_lock_leaves_it_alone() -> None:
    lock = _held_with_follow_up()
    before = lock.model_copy(deep=True)

    assert release(lock, "credit-other", LATER) is None
    assert lock == before


def test_the_holders_own_republished_request_does_not_claim_to_be_a_follow_up() -> None:
    request = follow_up_request(DATASET, _active("credit-a", coalesced=["credit-b"]))

    assert request.reason == (
        "the train request of the run holding the training lock, published again"
    )


# -- a stale holder is released only while it still holds the lock ---------------------


def test_a_stale_holder_is_released_and_handed_over_when_it_still_holds_the_lock() -> None:
    lock = _held_with_follow_up()
    stale = lock.active
    assert stale is not None

    decision = take_or_join(lock, _wanting("credit-d"), LATER, stale_holder=stale.model_copy())

    follow_up = follow_up_run_id(DATASET, "credit-a")
    assert isinstance(decision, Coalesced)
    assert decision.handed_over is not None
    assert decision.handed_over.run_id == follow_up
    assert decision.follow_up_run_id == follow_up_run_id(DATASET, follow_up)
    assert lock.pending is not None
    assert lock.pending.coalesced == ["credit-d"]


def test_a_holder_found_stale_is_kept_when_it_submitted_a_job_since_the_check() -> None:
    """Checked while reserved without a job (and judged stale), the holder submitted its
    job before this update: the lock is still rightly its, so nothing is handed over."""
    lock = _held_with_follow_up()
    checked = _active("credit-a", None)  # what the stale check saw

    decision = take_or_join(lock, _wanting("credit-d"), LATER, stale_holder=checked)

    assert decision == Coalesced(follow_up_run_id(DATASET, "credit-a"), None)
    assert lock.active is not None
    assert (lock.active.run_id, lock.active.job_name) == ("credit-a", "jobs/1")
    assert lock.pending is not None
    assert lock.pending.coalesced == ["credit-b", "credit-c", "credit-d"]


def test_a_holder_found_stale_is_kept_when_another_run_took_the_lock_since() -> None:
    lock = TrainingLock(dataset=DATASET, active=_active("credit-e", "jobs/9"))

    decision = take_or_join(
        lock, _wanting("credit-d"), LATER, stale_holder=_active("credit-a", "jobs/1")
    )

    assert decision == Coalesced(follow_up_run_id(DATASET, "credit-e"), None)
    assert lock.active is not None
    assert lock.active.run_id == "credit-e"


# -- joining the one follow-up -----------------------------------------------------------


def test_a_redelivered_request_joins_the_follow_up_once() -> None:
    lock = _held_with_follow_up()

    first = take_or_join(lock, _wanting("credit-d", tune=False), LATER, None)
    again = take_or_join(lock, _wanting("credit-d", tune=False), LATER, None)

    assert first == again == Coalesced(follow_up_run_id(DATASET, "credit-a"), None)
    assert lock.pending is not None
    assert lock.pending.coalesced == ["credit-b", "credit-c", "credit-d"]
    assert lock.pending.tune is True  # a request without tuning keeps the follow-up's


def test_the_follow_ups_own_request_is_refused_while_it_waits() -> None:
    lock = _held_with_follow_up()
    before = lock.model_copy(deep=True)

    with pytest.raises(BadRequestError, match="pending follow-up of credit-a"):
        take_or_join(lock, _wanting(follow_up_run_id(DATASET, "credit-a")), LATER, None)
    assert lock == before


def test_the_loser_of_a_race_for_a_free_lock_coalesces_instead_of_holding_it() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    locks = TrainingLockStore(store, DATASET)
    assert locks.read() == (TrainingLock(dataset=DATASET), 0)
    raced: list[Holding | Coalesced] = []

    def decide(lock: TrainingLock) -> Holding | Coalesced:
        if not raced:  # between this read and its write, run a takes the free lock
            winner = TrainingLockStore(store, DATASET)
            raced.append(
                winner.update(lambda won: take_or_join(won, _wanting("credit-a"), T0, None))
            )
        return take_or_join(lock, _wanting("credit-b"), T0, None)

    decision = locks.update(decide)

    assert isinstance(raced[0], Holding)
    assert decision == Coalesced(follow_up_run_id(DATASET, "credit-a"), None)
    lock, generation = locks.read()
    assert generation > 0
    assert lock.active is not None
    assert lock.active.run_id == "credit-a"
    assert lock.pending is not None
    assert lock.pending.coalesced == ["credit-b"]


# -- a lost request is published again only for the holder that was checked ------------


def test_a_lost_request_is_republished_only_for_the_unchanged_holder_without_a_job() -> None:
    waiting = TrainingLock(dataset=DATASET, active=_active("credit-a"))
    checked = _active("credit-a")

    with_job = TrainingLock(dataset=DATASET, active=_active("credit-a", "jobs/1"))
    assert mark_request_republished(with_job, _active("credit-a", "jobs/1"), LATER) is None
    other = TrainingLock(dataset=DATASET, active=_active("credit-e"))
    assert mark_request_republished(other, checked, LATER) is None
    since = TrainingLock(
        dataset=DATASET,
        active=_active("credit-a", request_republished_at=T0 + timedelta(1)),
    )
    assert mark_request_republished(since, checked, LATER) is None
    assert (with_job.updated_at, other.updated_at, since.updated_at) == (
        None,
        None,
        None,
    )

    republished = mark_request_republished(waiting, checked, LATER)

    assert republished is waiting.active
    assert republished is not None
    assert republished.request_republished_at == LATER
    assert waiting.updated_at == LATER
