"""The dead-letter recorder: keep the letter, fail its run, alert; once per message."""

from __future__ import annotations

import pytest

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import TransientError
from cascade.core.events import PubSubEnvelope
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, RunEnded, StepMessage
from cascade.core.observability import RunLogger
from cascade.core.paths import dead_letter_record
from cascade.core.runs import RunRecord, Trigger, run_id_for_object
from cascade.steps.dead_letter import DeadLetter, record_dead_letter
from cascade.steps.runner import StepOutcome, execute_step
from tests.unit.conftest import Clock

FORWARDED = {
    "CloudPubSubDeadLetterSourceDeliveryCount": "5",
    "CloudPubSubDeadLetterSourceSubscription": "eventarc-transform",
    "cascade_last_error": "HTTP 500: boom",
}


def _envelope(attributes: dict[str, str], message_id: str = "1234") -> PubSubEnvelope:
    return PubSubEnvelope(
        event_id=f"event-{message_id}",
        message_id=message_id,
        subscription="projects/p/subscriptions/eventarc-dead-letters",
        data=b'{"dataset": "credit"}',
        attributes={**attributes, **FORWARDED},
    )


def _running(step_context: StepContext, clock: Clock, run_id: str) -> None:
    step_context.ledger.ensure(
        RunRecord(
            run_id=run_id,
            dataset="credit",
            trigger=Trigger(kind="object", uri="gs://landing/credit/a.csv"),
            created_at=clock.now,
            updated_at=clock.now,
        )
    )


def _attempt_fails(step_context: StepContext, run_id: str, step: str, error: str) -> None:
    """A delivery of ``step`` whose attempt fails (the event will be redelivered)."""
    run = step_context.ledger.get(run_id)
    assert run is not None

    def failing(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        raise TransientError(error)

    with pytest.raises(TransientError):
        execute_step(step_context, run=run, step=step, owner=f"{step}-1", body=failing)


def _alerts(step_context: StepContext) -> list[Alert]:
    assert isinstance(step_context.bus, RecordingBus)
    return [m for m in step_context.bus.published if isinstance(m, Alert)]


def test_a_step_message_dead_letter_fails_its_run_and_alerts(
    step_context: StepContext, clock: Clock
) -> None:
    _running(step_context, clock, "credit-run1")
    envelope = _envelope(
        {"dataset": "credit", "run_id": "credit-run1", "message_type": "DataValidated"}
    )

    letter = record_dead_letter(step_context, envelope)

    assert letter is not None
    run = step_context.ledger.get("credit-run1")
    assert run is not None
    assert run.state == "failed"
    assert run.error == (
        "dead-lettered: DataValidated message 1234 was dead-lettered by eventarc-transform "
        "after 5 delivery attempts: HTTP 500: boom"
    )
    [alert] = _alerts(step_context)
    assert (alert.run_id, alert.step, alert.severity) == ("credit-run1", "dead-letter", "ERROR")
    assert alert.details["delivery_attempts"] == 5
    stored = step_context.artifacts.read_model(dead_letter_record("1234"), DeadLetter)
    assert stored is not None
    assert stored[0].attributes["run_id"] == "credit-run1"


def test_a_storage_notification_dead_letter_names_the_run_of_its_object(
    step_context: StepContext, clock: Clock
) -> None:
    run_id = run_id_for_object("credit", "landing", "credit/a.csv", 7)
    _running(step_context, clock, run_id)
    envelope = _envelope(
        {
            "bucketId": "landing",
            "objectId": "credit/a.csv",
            "objectGeneration": "7",
            "eventType": "OBJECT_FINALIZE",
        }
    )

    letter = record_dead_letter(step_context, envelope)

    assert letter is not None
    assert (letter.dataset, letter.run_id, letter.message_type) == (
        "credit",
        run_id,
        "object_finalize",
    )
    assert step_context.ledger.get(run_id).state == "failed"  # type: ignore[union-attr]


def test_a_duplicate_delivery_records_and_alerts_once(
    step_context: StepContext, clock: Clock
) -> None:
    _running(step_context, clock, "credit-run1")
    envelope = _envelope({"dataset": "credit", "run_id": "credit-run1"})

    first = record_dead_letter(step_context, envelope)
    again = record_dead_letter(step_context, envelope)

    assert first is not None
    assert again is None
    assert len(_alerts(step_context)) == 1
    assert _ends(step_context) == [RunEnded(dataset="credit", run_id="credit-run1", state="failed")]


def _ends(step_context: StepContext) -> list[RunEnded]:
    assert isinstance(step_context.bus, RecordingBus)
    return [m for m in step_context.bus.published if isinstance(m, RunEnded)]


class _StateAtPublish(RecordingBus):
    """Keeps what run.json says when each RunEnded is published."""

    def __init__(self, step_context: StepContext) -> None:
        super().__init__()
        self.ledger = step_context.ledger
        self.states: list[str] = []

    def publish(self, message: StepMessage) -> str:
        if isinstance(message, RunEnded):
            record = self.ledger.get(message.run_id)
            self.states.append("none" if record is None else record.state)
        return super().publish(message)


def test_a_failed_run_is_announced_once_run_json_says_failed(
    step_context: StepContext, clock: Clock
) -> None:
    bus = _StateAtPublish(step_context)
    step_context.bus = bus
    _running(step_context, clock, "credit-run1")

    record_dead_letter(step_context, _envelope({"dataset": "credit", "run_id": "credit-run1"}))

    assert _ends(step_context) == [RunEnded(dataset="credit", run_id="credit-run1", state="failed")]
    assert bus.states == ["failed"]  # the report function renders the failed run


def test_a_finished_run_is_left_as_it_was(step_context: StepContext, clock: Clock) -> None:
    _running(step_context, clock, "credit-run1")
    step_context.ledger.update("credit-run1", lambda run: setattr(run, "state", "succeeded"))

    record_dead_letter(step_context, _envelope({"dataset": "credit", "run_id": "credit-run1"}))

    assert step_context.ledger.get("credit-run1").state == "succeeded"  # type: ignore[union-attr]
    assert _ends(step_context) == []  # its end was announced by the step that ended it


def test_a_letter_naming_no_dataset_is_kept_without_an_alert(step_context: StepContext) -> None:
    letter = record_dead_letter(step_context, _envelope({"origin": "somewhere"}, "../x"))

    assert letter is not None
    assert letter.run_id is None
    assert _alerts(step_context) == []
    name = dead_letter_record("../x")
    assert name.startswith("dead-letters/")
    assert ".." not in name
    assert step_context.artifacts.read(name) is not None


def test_a_dead_lettered_run_keeps_the_cause_its_step_recorded(
    step_context: StepContext, clock: Clock
) -> None:
    """Google's dead letter carries no error: the step's last failed attempt says why."""
    _running(step_context, clock, "credit-run3")

    _attempt_fails(
        step_context,
        "credit-run3",
        "transform",
        "publishing to cascade-train-requests: 403 User not authorized to perform this action.",
    )
    envelope = _envelope(
        {"dataset": "credit", "run_id": "credit-run3", "message_type": "DataValidated"},
        message_id="9999",
    )

    record_dead_letter(step_context, envelope)

    run = step_context.ledger.get("credit-run3")
    assert run is not None
    assert run.state == "failed"
    assert run.error is not None
    assert run.error.endswith(
        "; last attempt: transform: publishing to cascade-train-requests: 403 "
        "User not authorized to perform this action."
    )
    assert run.steps["transform"].state == "failed"


def test_a_dead_lettered_run_leaves_no_step_running_and_keeps_finished_steps(
    step_context: StepContext, clock: Clock
) -> None:
    """Every step still running when the letter lands ends failed, with the run's error
    and the letter's time; steps that had already finished keep their outcome."""
    _running(step_context, clock, "credit-run4")
    started = clock.now

    run = step_context.ledger.get("credit-run4")
    assert run is not None
    execute_step(
        step_context,
        run=run,
        step="validate",
        owner="validate-1",
        body=lambda claim, log: StepOutcome(summary="accepted"),
    )
    _attempt_fails(step_context, "credit-run4", "transform", "storage 503")
    clock.advance(90)
    envelope = _envelope(
        {"dataset": "credit", "run_id": "credit-run4", "message_type": "DataValidated"},
        message_id="4444",
    )

    record_dead_letter(step_context, envelope)

    run = step_context.ledger.get("credit-run4")
    assert run is not None
    assert run.state == "failed"
    assert run.updated_at == clock.now
    assert [name for name, step in run.steps.items() if step.state == "running"] == []
    transform = run.steps["transform"]
    assert (transform.state, transform.error, transform.finished_at) == (
        "failed",
        run.error,
        clock.now,
    )
    validate = run.steps["validate"]
    assert (validate.state, validate.error, validate.finished_at) == (
        "succeeded",
        None,
        started,
    )


def _held(step_context: StepContext, clock: Clock, run_id: str, step: str) -> None:
    """Another delivery is working on ``step``: it holds the claim, its lease renewed."""
    claim = step_context.claims.acquire(
        run_id, step, owner=f"{step}-owner", now=clock.now, lease=step_context.claim_lease
    )
    assert claim is not None


def test_a_duplicate_dead_lettered_while_its_step_is_in_progress_leaves_the_run_running(
    step_context: StepContext, clock: Clock
) -> None:
    _running(step_context, clock, "credit-run1")
    _held(step_context, clock, "credit-run1", "transform")
    clock.advance(1)

    letter = record_dead_letter(
        step_context,
        _envelope({"dataset": "credit", "run_id": "credit-run1", "message_type": "DataValidated"}),
    )

    assert letter is not None  # kept and alerted all the same
    run = step_context.ledger.get("credit-run1")
    assert run is not None
    assert (run.state, run.error) == ("running", None)
    assert run.steps["transform"].state == "running"
    [alert] = _alerts(step_context)
    assert alert.run_id == "credit-run1"


def test_a_dead_letter_after_the_owners_lease_lapsed_fails_the_run(
    step_context: StepContext, clock: Clock
) -> None:
    _running(step_context, clock, "credit-run1")
    _held(step_context, clock, "credit-run1", "transform")
    clock.advance(step_context.claim_lease.total_seconds() + 1)  # the owner died

    record_dead_letter(
        step_context,
        _envelope({"dataset": "credit", "run_id": "credit-run1", "message_type": "DataValidated"}),
    )

    run = step_context.ledger.get("credit-run1")
    assert run is not None
    assert run.state == "failed"
    assert run.steps["transform"].state == "failed"
