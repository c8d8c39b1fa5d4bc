"""The dead-letter recorder indexes what it keeps: each letter newest first (once, healed
by a redelivery), and the run it fails under ``failed``."""

from __future__ import annotations

from datetime import timedelta

from cascade.core.context import StepContext
from cascade.core.dead_letter_index import DEAD_LETTER_INDEX_PREFIX, record_of_entry
from cascade.core.events import PubSubEnvelope
from cascade.core.paths import dead_letter_record
from cascade.core.run_index import RunIndex, StoreLister, ensure_run_indexed
from cascade.core.runs import RunRecord, Trigger, run_id_for_object
from cascade.steps.dead_letter import DeadLetter, record_dead_letter
from tests.unit.conftest import Clock

RUN_ID = run_id_for_object("credit", "landing", "credit/a.csv", 1)


def _envelope(message_id: str) -> PubSubEnvelope:
    return PubSubEnvelope(
        event_id=f"event-{message_id}",
        message_id=message_id,
        subscription="projects/p/subscriptions/eventarc-dead-letters",
        data=b'{"dataset": "credit"}',
        attributes={
            "dataset": "credit",
            "run_id": RUN_ID,
            "CloudPubSubDeadLetterSourceDeliveryCount": "5",
            "CloudPubSubDeadLetterSourceSubscription": "eventarc-validate",
        },
    )


def _running(step_context: StepContext, clock: Clock) -> RunRecord:
    record = step_context.ledger.ensure(
        RunRecord(
            run_id=RUN_ID,
            dataset="credit",
            trigger=Trigger(kind="object", uri="gs://landing/credit/a.csv", generation=1),
            created_at=clock.now,
            updated_at=clock.now,
        )
    )
    ensure_run_indexed(step_context.artifacts, record)
    return record


def _entries(step_context: StepContext) -> list[str | None]:
    names = step_context.artifacts.list_names(DEAD_LETTER_INDEX_PREFIX)
    return [record_of_entry(name) for name in names]


def test_each_letter_is_indexed_newest_first_once(step_context: StepContext, clock: Clock) -> None:
    for message_id in ("11", "12", "13"):
        record_dead_letter(step_context, _envelope(message_id))
        clock.advance(60)
    record_dead_letter(step_context, _envelope("12"))  # a duplicate delivery

    assert _entries(step_context) == [
        dead_letter_record("13"),
        dead_letter_record("12"),
        dead_letter_record("11"),
    ]


def test_a_redelivery_indexes_a_letter_its_first_delivery_kept_but_did_not_index(
    step_context: StepContext, clock: Clock
) -> None:
    first = record_dead_letter(step_context, _envelope("21"))
    assert first is not None
    for name in list(step_context.artifacts.list_names(DEAD_LETTER_INDEX_PREFIX)):
        step_context.artifacts.delete(name)  # the first delivery died before its entry
    clock.advance(3600)

    again = record_dead_letter(step_context, _envelope("21"))

    assert again is None
    names = list(step_context.artifacts.list_names(DEAD_LETTER_INDEX_PREFIX))
    assert [record_of_entry(name) for name in names] == [dead_letter_record("21")]
    stored = step_context.artifacts.read(dead_letter_record("21"))
    assert stored is not None
    kept = DeadLetter.model_validate_json(stored.data)
    assert kept.recorded_at == first.recorded_at  # indexed by the kept time, not now
    assert kept.recorded_at == clock.now - timedelta(seconds=3600)


def test_an_unreadable_kept_letter_is_not_indexed_and_not_an_error(
    step_context: StepContext,
) -> None:
    step_context.artifacts.create(dead_letter_record("31"), b"{not json")

    assert record_dead_letter(step_context, _envelope("31")) is None
    assert _entries(step_context) == []


def test_the_run_a_letter_fails_is_listed_under_failed(
    step_context: StepContext, clock: Clock
) -> None:
    _running(step_context, clock)
    index = RunIndex(step_context.artifacts, StoreLister(step_context.artifacts))
    assert [run.run_id for run in index.page(size=5, state="running").runs] == [RUN_ID]

    record_dead_letter(step_context, _envelope("41"))

    failed = index.page(size=5, state="failed", dataset="credit")
    assert [run.run_id for run in failed.runs] == [RUN_ID]
    assert index.page(size=5, state="running").runs == []
