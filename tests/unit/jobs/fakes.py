"""A first-class in-memory ``JobRunner`` for train-step tests.

It subclasses the ``JobRunner`` protocol explicitly, so mypy checks every method against
the interface the real runners (``VertexJobRunner``, ``LocalJobRunner``) implement.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

from cascade.core.context import StepContext
from cascade.core.errors import UnknownJobError
from cascade.core.job_spec import JobRunner, JobState, JobStatus, TrainingJobSpec
from cascade.jobs.job_events import job_end_log_entry, parse_job_event
from cascade.jobs.records import job_id_of
from cascade.steps.training_job import handle_job_event
from cascade.transform.catalog import TransformPointer, latest_transform_name

TRANSFORM_URI = "gs://cascade-artifacts/runs/credit-t1/transform/transform.json"


def point_latest_transform(ctx: StepContext, dataset: str = "credit") -> None:
    """Give ``dataset`` a latest transform, so train requests have data to train on."""
    pointer = TransformPointer(
        run_id="credit-t1",
        transform_uri=TRANSFORM_URI,
        files=1,
        rows=10,
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
    )
    ctx.artifacts.write_json(latest_transform_name(dataset), pointer)


class FakeJobRunner(JobRunner):
    """Keeps submitted jobs; the same request id returns the same job, like the real ones."""

    def __init__(self, *, publishes_tuning_result: bool = False) -> None:
        self.submitted: list[TrainingJobSpec] = []
        self.jobs: dict[str, JobStatus] = {}
        self._by_request: dict[str, str] = {}
        self._lock = threading.Lock()
        self._publishes = publishes_tuning_result

    @property
    def publishes_tuning_result(self) -> bool:
        return self._publishes

    def submit(self, spec: TrainingJobSpec, *, request_id: str) -> str:
        with self._lock:
            if request_id in self._by_request:
                return self._by_request[request_id]
            kind = "hyperparameterTuningJobs" if spec.tuning else "customJobs"
            name = f"projects/p/locations/r/{kind}/{len(self.submitted) + 1000}"
            self.submitted.append(spec)
            self._by_request[request_id] = name
            self.jobs[name] = JobStatus(name=name, state="running")
            return name

    def get(self, name: str) -> JobStatus:
        if name not in self.jobs:
            raise UnknownJobError(name)
        return self.jobs[name]

    def cancel(self, name: str) -> None:
        self.finish(name, "cancelled")

    def finish(self, name: str, state: JobState, **fields: object) -> JobStatus:
        self.jobs[name] = self.jobs[name].model_copy(update={"state": state, **fields})
        return self.jobs[name]

    def spec_of(self, run_id: str) -> TrainingJobSpec:
        return next(spec for spec in self.submitted if spec.run_id == run_id)


def end_job(ctx: StepContext, runner: FakeJobRunner, run_id: str, event_id: str) -> None:
    """The job of ``run_id`` succeeds and its log entry arrives on job-events."""
    name = runner.submit(runner.spec_of(run_id), request_id=run_id)  # the job it already has
    if not runner.get(name).finished:
        runner.finish(name, "succeeded")
    entry = job_end_log_entry(
        project="p",
        job_id=job_id_of(name),
        job_name=name,
        state="succeeded",
        error="",
        timestamp="2026-11-27T12:00:00Z",
        insert_id=event_id,
    )
    handle_job_event(
        ctx, parse_job_event(json.dumps(entry).encode()), event_id=event_id, runner=runner
    )
