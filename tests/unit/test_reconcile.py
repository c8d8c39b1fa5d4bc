"""reconcile: lost events and dead owners are resumed, idempotently."""

from __future__ import annotations

from datetime import timedelta

from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.messages import Alert, DataValidated, ObjectRef
from cascade.core.runs import RunRecord, Trigger, run_id_for_object
from cascade.steps.reconcile import reconcile
from cascade.steps.runner import StepOutcome, execute_step
from tests.unit.conftest import Clock

STALE = timedelta(minutes=10)
TRANSFORM = "transform"


def _landing(step_context: StepContext, clock: Clock) -> MemoryArtifactStore:
    landing = MemoryArtifactStore("cascade-landing", clock=clock)
    step_context.landing = landing
    return landing


def _record_started_uploads(calls: list[StorageObjectEvent]):  # type: ignore[no-untyped-def]
    def start(ctx: StepContext, event: StorageObjectEvent) -> None:
        calls.append(event)

    return start


def _validated_run(step_context: StepContext, clock: Clock, name: str, generation: int) -> str:
    run_id = run_id_for_object("credit", "cascade-landing", name, generation)
    run = RunRecord(
        run_id=run_id,
        dataset="credit",
        created_at=clock.now,
        updated_at=clock.now,
        trigger=Trigger(kind="object", uri=f"gs://cascade-landing/{name}", generation=generation),
    )
    message = DataValidated(
        dataset="credit",
        run_id=run_id,
        source=ObjectRef(bucket="cascade-landing", name=name, generation=generation),
    )
    alert = Alert(
        dataset="credit",
        run_id=run_id,
        step="validate",
        severity="WARNING",
        summary="a warning",
        at=clock.now,
    )
    execute_step(
        step_context,
        run=run,
        step="validate",
        owner="e1",
        body=lambda claim, log: StepOutcome(messages=[message, alert]),
    )
    return run_id


def test_landed_object_without_a_run_is_started(step_context: StepContext, clock: Clock) -> None:
    landing = _landing(step_context, clock)
    generation = landing.write("credit/lost.csv", b"a,b\n1,2\n")
    assert generation is not None
    clock.advance(STALE.total_seconds() + 1)
    started: list[StorageObjectEvent] = []

    report = reconcile(
        step_context, stale_after=STALE, start_upload=_record_started_uploads(started)
    )

    assert [event.name for event in started] == ["credit/lost.csv"]
    assert started[0].generation == generation
    assert started[0].size == 8
    assert report.uploads_started == [
        run_id_for_object("credit", "cascade-landing", "credit/lost.csv", generation)
    ]


def test_recent_objects_and_stray_files_are_left_alone(
    step_context: StepContext, clock: Clock
) -> None:
    landing = _landing(step_context, clock)
    landing.write("credit/just-landed.csv", b"a\n1\n")
    landing.write("stray.csv", b"a\n1\n")
    started: list[StorageObjectEvent] = []

    report = reconcile(
        step_context, stale_after=STALE, start_upload=_record_started_uploads(started)
    )

    assert started == []
    assert report.objects_seen == 2


def test_stalled_run_republishes_the_last_finished_steps_messages_but_not_alerts(
    step_context: StepContext, clock: Clock
) -> None:
    _landing(step_context, clock)
    run_id = _validated_run(step_context, clock, "credit/a.csv", 7)
    assert isinstance(step_context.bus, RecordingBus)
    step_context.bus.published.clear()
    clock.advance(STALE.total_seconds() + 1)

    report = reconcile(step_context, stale_after=STALE, start_upload=_record_started_uploads([]))

    assert report.runs_resumed == [run_id]
    assert [type(m) for m in step_context.bus.published] == [DataValidated]


def test_a_finished_side_step_does_not_hide_a_stalled_chain(
    step_context: StepContext, clock: Clock
) -> None:
    """The monitor runs beside transform on the same message; its finishing later than
    validate must not make the run look as if the chain had moved on."""
    _landing(step_context, clock)
    run_id = _validated_run(step_context, clock, "credit/m.csv", 9)
    run = step_context.ledger.get(run_id)
    assert run is not None
    execute_step(
        step_context,
        run=run,
        step="monitor",
        owner="m1",
        body=lambda claim, log: StepOutcome(summary="scored"),
    )
    assert isinstance(step_context.bus, RecordingBus)
    step_context.bus.published.clear()
    clock.advance(STALE.total_seconds() + 1)

    report = reconcile(step_context, stale_after=STALE, start_upload=_record_started_uploads([]))

    assert report.runs_resumed == [run_id]
    assert [type(m) for m in step_context.bus.published] == [DataValidated]


def test_step_whose_owner_died_is_retriggered_by_its_predecessors_messages(
    step_context: StepContext, clock: Clock
) -> None:
    _landing(step_context, clock)
    run_id = _validated_run(step_context, clock, "credit/b.csv", 8)
    step_context.claims.acquire(
        run_id, TRANSFORM, owner="crashed", now=clock.now, lease=timedelta(seconds=60)
    )
    assert isinstance(step_context.bus, RecordingBus)
    step_context.bus.published.clear()
    clock.advance(STALE.total_seconds() + 1)

    report = reconcile(step_context, stale_after=STALE, start_upload=_record_started_uploads([]))

    assert report.runs_resumed == [run_id]
    assert [type(m) for m in step_context.bus.published] == [DataValidated]


def test_finished_and_fresh_runs_are_not_touched(step_context: StepContext, clock: Clock) -> None:
    _landing(step_context, clock)
    run_id = _validated_run(step_context, clock, "credit/c.csv", 9)
    assert isinstance(step_context.bus, RecordingBus)
    step_context.bus.published.clear()

    fresh = reconcile(step_context, stale_after=STALE, start_upload=_record_started_uploads([]))
    step_context.ledger.update(run_id, lambda record: setattr(record, "state", "succeeded"))
    clock.advance(STALE.total_seconds() + 1)
    finished = reconcile(step_context, stale_after=STALE, start_upload=_record_started_uploads([]))

    assert fresh.runs_resumed == []
    assert finished.runs_resumed == []
    assert step_context.bus.published == []
