"""A training lock held by a run whose train request was lost is not left waiting: the
next request (or ``cascade reconcile``) publishes that request again."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.job_spec import TrainingJobSpec
from cascade.core.messages import TrainRequest
from cascade.core.runs import run_id_for_request
from cascade.core.settings import Settings
from cascade.jobs.job_events import job_end_log_entry, parse_job_event
from cascade.jobs.lock import TrainingLockStore, follow_up_run_id
from cascade.jobs.lost_request import lost_request_after, lost_train_request
from cascade.jobs.records import job_id_of
from cascade.steps.reconcile import reconcile
from cascade.steps.train import handle_train_request
from cascade.steps.training_job import handle_job_event
from tests.unit.conftest import Clock
from tests.unit.jobs.fakes import FakeJobRunner, point_latest_transform

DATASET = "credit"
STALE_AFTER = timedelta(minutes=10)  # cascade reconcile's default


@pytest.fixture
def runner() -> FakeJobRunner:
    return FakeJobRunner()


@pytest.fixture(autouse=True)
def _transformed(step_context: StepContext) -> None:
    point_latest_transform(step_context, DATASET)


def _request(request_id: str) -> TrainRequest:
    return TrainRequest(dataset=DATASET, request_id=request_id)


def _run_id(request_id: str) -> str:
    return run_id_for_request(DATASET, request_id)


def _published(ctx: StepContext) -> list[TrainRequest]:
    return [m for m in ctx.bus.published if isinstance(m, TrainRequest)]  # type: ignore[attr-defined]


def _lose_published(ctx: StepContext) -> None:
    ctx.bus.published.clear()  # type: ignore[attr-defined]


def _hand_over_to_a_follow_up(ctx: StepContext, runner: FakeJobRunner) -> str:
    """Run a's job with b coalesced; a's job succeeds, the lock goes to the follow-up and
    its train request is published, and then lost (as a killed router lost it)."""
    handle_train_request(ctx, _request("a"), event_id="ma", runner=runner)
    handle_train_request(ctx, _request("b"), event_id="mb", runner=runner)
    name = runner.submit(runner.spec_of(_run_id("a")), request_id=_run_id("a"))
    runner.finish(name, "succeeded")
    entry = job_end_log_entry(
        project="p",
        job_id=job_id_of(name),
        job_name=name,
        state="succeeded",
        error="",
        timestamp="2026-11-27T12:00:00Z",
        insert_id="log-a",
    )
    handle_job_event(
        ctx, parse_job_event(json.dumps(entry).encode()), event_id="log-a", runner=runner
    )
    follow_up = follow_up_run_id(DATASET, _run_id("a"))
    assert [r.run_id for r in _published(ctx)] == [follow_up]
    _lose_published(ctx)
    lock, _ = TrainingLockStore(ctx.artifacts, DATASET).read()
    assert lock.active is not None
    assert (lock.active.run_id, lock.active.job_name) == (follow_up, None)
    return follow_up


def test_the_wait_is_two_claim_leases_well_under_reconciles_default() -> None:
    assert lost_request_after(Settings()) == timedelta(seconds=120)
    assert lost_request_after(Settings(claim_lease_s=15)) == timedelta(seconds=30)
    assert lost_request_after(Settings()) < STALE_AFTER


def test_a_follow_up_whose_request_was_lost_gets_it_again_from_the_next_request(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    follow_up = _hand_over_to_a_follow_up(step_context, runner)
    wait = lost_request_after(step_context.settings).total_seconds()

    clock.advance(wait - 1)
    early = handle_train_request(step_context, _request("c"), event_id="mc", runner=runner)
    assert early is not None
    assert early.outputs == {"coalesced_into": follow_up_run_id(DATASET, follow_up)}
    assert _published(step_context) == []  # it may still be on its way

    clock.advance(2)
    late = handle_train_request(step_context, _request("d"), event_id="md", runner=runner)
    assert late is not None
    assert late.outputs == {"coalesced_into": follow_up_run_id(DATASET, follow_up)}
    [again] = _published(step_context)
    assert (again.run_id, again.request_id) == (follow_up, f"follow-up:{_run_id('a')}")

    handle_train_request(step_context, again, event_id="m-again", runner=runner)
    assert [spec.run_id for spec in runner.submitted] == [_run_id("a"), follow_up]
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()
    assert lock.active is not None
    assert lock.active.run_id == follow_up
    assert lock.active.job_name is not None
    assert lock.pending is not None
    assert set(lock.pending.coalesced) == {_run_id("c"), _run_id("d")}


def test_a_lost_request_is_published_again_once_per_wait(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    follow_up = _hand_over_to_a_follow_up(step_context, runner)
    wait = lost_request_after(step_context.settings).total_seconds()

    clock.advance(wait + 1)
    for name in ("c", "d", "e"):
        handle_train_request(step_context, _request(name), event_id=f"m{name}", runner=runner)
    assert [r.run_id for r in _published(step_context)] == [follow_up]

    clock.advance(wait + 1)  # lost again
    handle_train_request(step_context, _request("f"), event_id="mf", runner=runner)
    assert [r.run_id for r in _published(step_context)] == [follow_up, follow_up]


class _Crash(BaseException):
    """The instance dies mid-step: nothing below the step's body sees it."""


class _CrashingRunner(FakeJobRunner):
    def submit(self, spec: TrainingJobSpec, *, request_id: str) -> str:
        raise _Crash


def test_a_run_whose_train_step_lost_its_owner_gets_its_request_again(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    with pytest.raises(_Crash):
        handle_train_request(step_context, _request("a"), event_id="ma", runner=_CrashingRunner())
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()
    assert lock.active is not None
    assert lock.active.run_id == _run_id("a")
    assert lost_train_request(step_context, lock.active) is None

    clock.advance(lost_request_after(step_context.settings).total_seconds() + 1)
    reason = lost_train_request(step_context, lock.active)
    handle_train_request(step_context, _request("b"), event_id="mb", runner=runner)

    assert reason is not None
    assert "lost its owner" in reason
    [again] = _published(step_context)
    assert again.run_id == _run_id("a")
    handle_train_request(step_context, again, event_id="ma-again", runner=runner)
    assert [spec.run_id for spec in runner.submitted] == [_run_id("a")]


def test_a_run_holding_the_lock_with_a_live_train_step_is_not_lost(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    handle_train_request(step_context, _request("a"), event_id="ma", runner=runner)
    clock.advance(3600)
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()

    assert lock.active is not None
    assert lock.active.job_name is not None
    assert lost_train_request(step_context, lock.active) is None


def test_reconcile_publishes_a_lost_follow_up_request_again_long_before_stale_after(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    step_context.landing = MemoryArtifactStore("cascade-landing", clock=clock)
    follow_up = _hand_over_to_a_follow_up(step_context, runner)
    wait = lost_request_after(step_context.settings).total_seconds()

    clock.advance(wait - 1)
    assert reconcile(step_context, stale_after=STALE_AFTER).train_requests_republished == []

    clock.advance(2)
    report = reconcile(step_context, stale_after=STALE_AFTER)
    again = reconcile(step_context, stale_after=STALE_AFTER)

    assert report.train_requests_republished == [follow_up]
    assert follow_up in report.runs_resumed
    assert again.train_requests_republished == []  # once per wait
    [published] = _published(step_context)
    assert published.run_id == follow_up
    handle_train_request(step_context, published, event_id="m-again", runner=runner)
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()
    assert lock.active is not None
    assert lock.active.job_name is not None
