"""Run records as the steps write them, built in tests (the shapes of cascade.steps.*)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cascade.core.runs import RunRecord, RunState, StepRecord, StepState, Trigger

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def step(
    state: StepState,
    start_s: float,
    duration_s: float | None,
    error: str | None = None,
    **outputs: Any,
) -> StepRecord:
    finished = None if duration_s is None else T0 + timedelta(seconds=start_s + duration_s)
    return StepRecord(
        state=state,
        attempts=1,
        started_at=T0 + timedelta(seconds=start_s),
        finished_at=finished,
        duration_s=duration_s,
        error=error,
        outputs=outputs,
    )


def upload_run(
    run_id: str = "credit-0123456789abcdef",
    *,
    file: str = "demo-1.csv",
    created_s: float = 0.0,
    state: RunState = "succeeded",
    steps: dict[str, StepRecord] | None = None,
    lineage: dict[str, Any] | None = None,
    dataset: str = "credit",
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        dataset=dataset,
        trigger=Trigger(
            kind="object", uri=f"gs://cascade-landing/{dataset}/{file}#17", generation=17
        ),
        state=state,
        created_at=T0 + timedelta(seconds=created_s),
        updated_at=T0 + timedelta(seconds=created_s + 30),
        steps=steps or {},
        lineage=lineage or {},
    )


def request_run(
    run_id: str = "credit-r0123456789abcdef",
    *,
    request_id: str = "retrain-1",
    created_s: float = 0.0,
    state: RunState = "running",
    steps: dict[str, StepRecord] | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        dataset="credit",
        trigger=Trigger(kind="request", request_id=request_id, event_id="9"),
        state=state,
        created_at=T0 + timedelta(seconds=created_s),
        updated_at=T0 + timedelta(seconds=created_s + 30),
        steps=steps or {},
    )


JOB = "projects/cascade-local/locations/local/customJobs/4d899d90bc00bced"


def deployed_steps() -> dict[str, StepRecord]:
    """A run that went all the way: accepted, trained for 20 s, blessed, promoted as v3."""
    return {
        "validate": step("succeeded", 0.0, 0.45, warnings=[]),
        "transform": step(
            "succeeded", 0.6, 0.93, features=10, train_rows=2400, eval_rows=600, files=1
        ),
        "train": step("succeeded", 1.6, 0.15, job_name=JOB, kind="custom"),
        "evaluate": step("succeeded", 22.0, 0.07, verdict="blessed"),
        "deploy": step(
            "succeeded",
            22.2,
            1.77,
            version="3",
            promoted=True,
            canary={"detail": "20 requests answered, p95 16.5 ms"},
        ),
        "training_job": step("succeeded", 24.0, 0.02, job_name=JOB, job_state="succeeded"),
    }
