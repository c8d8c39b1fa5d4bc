"""A first-class in-memory ``JobRunner`` for train-step tests.

It subclasses the ``JobRunner`` protocol explicitly, so mypy checks every method against
the interface the real runners (``VertexJobRunner``, ``LocalJobRunner``) implement.
"""

from __future__ import annotations

import threading

from cascade.core.errors import UnknownJobError
from cascade.core.job_spec import JobRunner, JobState, JobStatus, TrainingJobSpec


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
