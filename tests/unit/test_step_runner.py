"""execute_step: claims, run record and publication under at-least-once delivery."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from cascade.core.claims import Claim, ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import (
    BadInputError,
    ConcurrentUpdateError,
    StepInProgressError,
    TransientError,
)
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.messages import Alert, DataValidated, ObjectRef, RunEnded, StepMessage
from cascade.core.paths import RunPaths
from cascade.core.runs import RunLedger, RunRecord, Trigger
from cascade.core.settings import Settings
from cascade.steps.runner import StepOutcome, execute_step
from tests.unit.conftest import Clock, memory_step_context

RUN_ID = "credit-0123456789abcdef"


def _run(clock: Clock) -> RunRecord:
    return RunRecord(
        run_id=RUN_ID,
        dataset="credit",
        trigger=Trigger(kind="object", uri="gs://b/credit/a"),
        created_at=clock.now,
        updated_at=clock.now,
    )


def _message() -> DataValidated:
    return DataValidated(
        dataset="credit", run_id=RUN_ID, source=ObjectRef(bucket="b", name="credit/a", generation=1)
    )


def _succeeding_body(calls: list[str]):  # type: ignore[no-untyped-def]
    def body(claim, log):  # type: ignore[no-untyped-def]
        calls.append(claim.claim.owner)
        return StepOutcome(summary="ok", outputs={"rows": 3}, messages=[_message()])

    return body


def test_first_delivery_runs_the_body_records_and_publishes(
    step_context: StepContext, clock: Clock
) -> None:
    calls: list[str] = []

    outcome = execute_step(
        step_context,
        run=_run(clock),
        step="validate",
        owner="event-1",
        body=_succeeding_body(calls),
    )

    assert outcome is not None
    assert calls == ["event-1"]
    record = step_context.ledger.get(RUN_ID)
    assert record is not None
    assert record.steps["validate"].state == "succeeded"
    assert record.steps["validate"].outputs == {"rows": 3}
    assert record.steps["validate"].attempts == 1
    assert isinstance(step_context.bus, RecordingBus)
    assert step_context.bus.published == [_message()]


def test_duplicate_delivery_after_completion_is_a_no_op(
    step_context: StepContext, clock: Clock
) -> None:
    calls: list[str] = []
    execute_step(
        step_context,
        run=_run(clock),
        step="validate",
        owner="event-1",
        body=_succeeding_body(calls),
    )

    again = execute_step(
        step_context,
        run=_run(clock),
        step="validate",
        owner="event-1-again",
        body=_succeeding_body(calls),
    )

    assert again is None
    assert calls == ["event-1"]
    assert isinstance(step_context.bus, RecordingBus)
    assert len(step_context.bus.published) == 1


def _hold_live_claim(step_context: StepContext, clock: Clock, owner: str) -> None:
    step_context.ledger.ensure(_run(clock))
    step_context.claims.acquire(
        RUN_ID, "validate", owner=owner, now=clock.now, lease=step_context.claim_lease
    )


def test_delivery_during_a_live_claim_is_retried_later(
    step_context: StepContext, clock: Clock
) -> None:
    _hold_live_claim(step_context, clock, owner="event-1")
    calls: list[str] = []

    with pytest.raises(StepInProgressError, match="in progress by event-1"):
        execute_step(
            step_context,
            run=_run(clock),
            step="validate",
            owner="event-2",
            body=_succeeding_body(calls),
        )
    assert calls == []


def test_expired_claim_of_a_dead_owner_is_taken_over_and_resumed(
    step_context: StepContext, clock: Clock
) -> None:
    _hold_live_claim(step_context, clock, owner="crashed-event")
    clock.advance(step_context.settings.claim_lease_s + 1)
    calls: list[str] = []

    outcome = execute_step(
        step_context,
        run=_run(clock),
        step="validate",
        owner="redelivery",
        body=_succeeding_body(calls),
    )

    assert outcome is not None
    assert calls == ["redelivery"]
    found = step_context.artifacts.read_model(RunPaths(RUN_ID).claim("validate"), Claim)
    assert found is not None
    assert found[0].takeovers == 1
    done = step_context.claims.get(RUN_ID, "validate")
    assert done is not None
    assert done.state == "done"
    assert done.owner == "redelivery"


def test_permanent_error_is_recorded_alerted_and_acknowledged(
    step_context: StepContext, clock: Clock
) -> None:
    def body(claim, log):  # type: ignore[no-untyped-def]
        raise BadInputError("ragged row", uri="gs://b/credit/a.csv", location="row 7")

    outcome = execute_step(
        step_context, run=_run(clock), step="validate", owner="event-1", body=body
    )

    assert outcome is not None
    assert outcome.run_state == "failed"
    record = step_context.ledger.get(RUN_ID)
    assert record is not None
    assert record.state == "failed"
    assert record.steps["validate"].error == "gs://b/credit/a.csv row 7: ragged row"
    assert isinstance(step_context.bus, RecordingBus)
    [alert, ended] = step_context.bus.published
    assert isinstance(alert, Alert)
    assert alert.severity == "ERROR"
    assert "row 7" in alert.summary
    assert ended == RunEnded(dataset="credit", run_id=RUN_ID, state="failed")
    again = execute_step(
        step_context, run=_run(clock), step="validate", owner="event-1b", body=body
    )
    assert again is None  # not retried into a loop


def test_transient_error_releases_the_claim_so_a_retry_runs_at_once(
    step_context: StepContext, clock: Clock
) -> None:
    def failing(claim, log):  # type: ignore[no-untyped-def]
        raise TransientError("storage 503")

    with pytest.raises(TransientError):
        execute_step(step_context, run=_run(clock), step="validate", owner="event-1", body=failing)
    calls: list[str] = []
    outcome = execute_step(
        step_context,
        run=_run(clock),
        step="validate",
        owner="event-1",
        body=_succeeding_body(calls),
    )

    assert outcome is not None
    record = step_context.ledger.get(RUN_ID)
    assert record is not None
    assert record.steps["validate"].attempts == 2
    assert record.steps["validate"].error is None


def test_concurrent_run_updates_do_not_lose_each_other() -> None:
    store = MemoryArtifactStore()

    ledger = RunLedger(store)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ledger.ensure(
        RunRecord(
            run_id="r", dataset="d", trigger=Trigger(kind="request"), created_at=now, updated_at=now
        )
    )
    interleaved = {"done": False}

    def first(record: RunRecord) -> None:
        record.lineage["first"] = True
        if not interleaved["done"]:  # another writer sneaks in between read and write
            interleaved["done"] = True
            ledger.update("r", lambda other: other.lineage.update(second=True))

    ledger.update("r", first)

    record = ledger.get("r")
    assert record is not None
    assert record.lineage == {"first": True, "second": True}


def test_failure_to_publish_the_alert_is_retried_not_lost(
    step_context: StepContext, clock: Clock
) -> None:
    class UnavailableBus(RecordingBus):
        def publish(self, message):  # type: ignore[no-untyped-def]
            raise TransientError("pubsub unavailable")

    step_context.bus = UnavailableBus()

    def body(claim, log):  # type: ignore[no-untyped-def]
        raise BadInputError("empty file", uri="gs://b/credit/a.csv")

    with pytest.raises(TransientError):
        execute_step(step_context, run=_run(clock), step="validate", owner="event-1", body=body)
    step_context.bus = RecordingBus()
    outcome = execute_step(
        step_context, run=_run(clock), step="validate", owner="event-1", body=body
    )

    assert outcome is not None
    assert outcome.state == "failed"
    assert [type(m) for m in step_context.bus.published] == [Alert, RunEnded]


def _claim_of(step_context: StepContext) -> Claim:
    found = step_context.artifacts.read_model(RunPaths(RUN_ID).claim("validate"), Claim)
    assert found is not None
    return found[0]


def test_a_long_step_keeps_its_claim_alive_with_heartbeats(clock: Clock) -> None:
    ctx = memory_step_context(clock, Settings(claim_lease_s=1))
    leases: list[datetime] = []

    def slow_body(claim, log):  # type: ignore[no-untyped-def]
        for _ in range(3):  # three lease lengths of "work"; the clock moves with it
            clock.advance(1)
            time.sleep(0.45)
            leases.append(_claim_of(ctx).lease_expires_at)
        with pytest.raises(StepInProgressError):  # a duplicate still finds it live
            ctx.claims.acquire(
                RUN_ID, "validate", owner="dup", now=clock.now, lease=ctx.claim_lease
            )
        return StepOutcome(summary="ok")

    outcome = execute_step(ctx, run=_run(clock), step="validate", owner="slow", body=slow_body)

    assert outcome is not None
    assert leases == sorted(leases)
    assert leases[-1] > leases[0]  # renewed while working
    assert _claim_of(ctx).takeovers == 0
    done = ctx.claims.get(RUN_ID, "validate")
    assert done is not None
    assert done.state == "done"


def test_a_renewal_after_a_takeover_is_refused(step_context: StepContext, clock: Clock) -> None:
    step_context.ledger.ensure(_run(clock))
    held = step_context.claims.acquire(
        RUN_ID, "validate", owner="stalled", now=clock.now, lease=timedelta(seconds=1)
    )
    assert isinstance(held, ClaimHandle)
    clock.advance(2)
    step_context.claims.acquire(
        RUN_ID, "validate", owner="redelivery", now=clock.now, lease=timedelta(seconds=60)
    )

    with pytest.raises(ConcurrentUpdateError, match="taken over"):
        held.renew(clock.now, timedelta(seconds=1))
    assert _claim_of(step_context).owner == "redelivery"


class _StateAtPublish(RecordingBus):
    """Keeps what run.json says at the moment each message is published."""

    def __init__(self, ledger: RunLedger) -> None:
        super().__init__()
        self.ledger = ledger
        self.states: list[str | None] = []

    def publish(self, message: StepMessage) -> str:
        record = self.ledger.get(RUN_ID)
        self.states.append(None if record is None else record.state)
        return super().publish(message)


def test_a_step_that_ends_the_run_announces_its_end_once_run_json_holds_it(
    step_context: StepContext, clock: Clock
) -> None:
    bus = _StateAtPublish(step_context.ledger)
    step_context.bus = bus

    def last_step(claim, log):  # type: ignore[no-untyped-def]
        return StepOutcome(summary="deployed", run_state="succeeded")

    execute_step(step_context, run=_run(clock), step="deploy", owner="event-1", body=last_step)

    assert bus.published == [RunEnded(dataset="credit", run_id=RUN_ID, state="succeeded")]
    assert bus.states == ["succeeded"]  # the report function reads the ended run
    # The report is the report function's work (cascade.steps.report), not the step's.
    assert step_context.artifacts.read(RunPaths(RUN_ID).report) is None


def test_a_step_that_does_not_end_the_run_announces_nothing(
    step_context: StepContext, clock: Clock
) -> None:
    execute_step(
        step_context, run=_run(clock), step="validate", owner="e", body=_succeeding_body([])
    )

    assert [type(m) for m in step_context.bus.published] == [DataValidated]  # type: ignore[attr-defined]


def test_a_repaired_end_is_announced(step_context: StepContext, clock: Clock) -> None:
    """The delivery that finished the step died before run.json's end: the redelivery
    writes the end and announces it."""

    def last_step(claim, log):  # type: ignore[no-untyped-def]
        return StepOutcome(summary="deployed", run_state="succeeded")

    def fail_once(*args: object) -> None:
        raise ConcurrentUpdateError("died")

    real_update = step_context.ledger.update
    step_context.ledger.update = fail_once  # type: ignore[method-assign,assignment]
    with pytest.raises(ConcurrentUpdateError):
        execute_step(step_context, run=_run(clock), step="deploy", owner="e1", body=last_step)
    step_context.ledger.update = real_update  # type: ignore[method-assign]
    assert step_context.bus.published == []  # type: ignore[attr-defined]

    assert (
        execute_step(step_context, run=_run(clock), step="deploy", owner="e2", body=last_step)
        is None
    )

    assert step_context.bus.published == [  # type: ignore[attr-defined]
        RunEnded(dataset="credit", run_id=RUN_ID, state="succeeded")
    ]


def test_an_announcement_that_cannot_be_published_leaves_the_step_done(
    step_context: StepContext, clock: Clock
) -> None:
    class DownBus(RecordingBus):
        def publish(self, message: StepMessage) -> str:
            if isinstance(message, RunEnded):
                raise TransientError("503 Pub/Sub unavailable")
            return super().publish(message)

    step_context.bus = DownBus()

    def last_step(claim, log):  # type: ignore[no-untyped-def]
        return StepOutcome(summary="deployed", run_state="succeeded")

    outcome = execute_step(
        step_context, run=_run(clock), step="deploy", owner="event-1", body=last_step
    )

    assert outcome is not None  # not raised: a redelivery would not announce it either
    record = step_context.ledger.get(RUN_ID)
    assert record is not None
    assert record.state == "succeeded"
