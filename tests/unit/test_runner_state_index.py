"""The step that ends a run indexes it under its end state (the console's state filter),
once; a redelivery after a crash between run.json's end and those entries heals them."""

from __future__ import annotations

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.observability import RunLogger
from cascade.core.run_index import RunIndex, StoreLister, state_entry_names
from cascade.core.runs import RunRecord, Trigger, run_id_for_object
from cascade.steps.runner import StepOutcome, execute_step
from tests.unit.conftest import Clock


def _run(clock: Clock) -> RunRecord:
    return RunRecord(
        run_id=run_id_for_object("credit", "landing", "credit/a.csv", 1),
        dataset="credit",
        trigger=Trigger(kind="object", uri="gs://landing/credit/a.csv", generation=1),
        created_at=clock.now,
        updated_at=clock.now,
    )


def _rejects(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
    return StepOutcome(state="rejected", summary="bad column", run_state="rejected")


def _ids(step_context: StepContext, state: str) -> list[str]:
    index = RunIndex(step_context.artifacts, StoreLister(step_context.artifacts))
    return [run.run_id for run in index.page(size=10, state=state).runs]


def test_the_step_that_ends_the_run_indexes_its_end_state(
    step_context: StepContext, clock: Clock
) -> None:
    run = _run(clock)

    execute_step(step_context, run=run, step="validate", owner="v-1", body=_rejects)

    assert _ids(step_context, "rejected") == [run.run_id]
    assert _ids(step_context, "running") == []
    execute_step(step_context, run=run, step="validate", owner="v-2", body=_rejects)
    assert _ids(step_context, "rejected") == [run.run_id]  # a duplicate: listed once


def test_a_redelivery_heals_end_entries_a_crash_left_unwritten(
    step_context: StepContext, clock: Clock
) -> None:
    run = _run(clock)
    execute_step(step_context, run=run, step="validate", owner="v-1", body=_rejects)
    for name in state_entry_names(run, "rejected"):
        step_context.artifacts.delete(name)  # died after run.json's end, before these

    execute_step(step_context, run=run, step="validate", owner="v-2", body=_rejects)

    assert _ids(step_context, "rejected") == [run.run_id]
