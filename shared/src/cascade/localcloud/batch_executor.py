"""The local job service's batch prediction jobs (Vertex AI's BatchPredictionJob here).

Each job runs ``python -m cascade.batch.task`` (the scoring code the CLI runs too) in
its own process, with the trainers' environment: as the Vertex AI jobs' account, so the
topology's grants of that account (the predictions dataset, the jobs user role) are what
it may do. Jobs persist as ``<root>/<job_id>/job.json`` with the task's output in
``task.log``; a restarted service stops a task its predecessor left running and runs
the job again (the batch is idempotent: its manifest, and insert ids per row).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from cascade.batch.jobs import BatchJobSpec, LocalBatchJob
from cascade.localcloud.task_jobs import TaskJobs

__all__ = ["BATCH_TASK_MODULE", "LocalBatchExecutor", "local_batch_job_id"]

BATCH_TASK_MODULE = "cascade.batch.task"


def local_batch_job_id(request_id: str) -> str:
    return hashlib.sha256(f"local-batch-job:{request_id}".encode()).hexdigest()[:16]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalBatchExecutor(TaskJobs[LocalBatchJob]):
    model = LocalBatchJob
    module = BATCH_TASK_MODULE
    log_name = "task.log"
    kind = "batch"

    def __init__(
        self,
        root: Path,
        *,
        project: str,
        python: str,
        base_environment: Mapping[str, str],
        cwd: Path | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__(
            root, python=python, base_environment=base_environment, cwd=cwd, clock=clock
        )
        self._project = project

    def arguments(self, job: LocalBatchJob) -> list[str]:
        return job.spec.task_arguments()

    def submit(self, spec: BatchJobSpec, request_id: str) -> LocalBatchJob:
        """The job of ``request_id``: started now, or the one already submitted."""
        job_id = local_batch_job_id(request_id)
        with self._lock:
            existing = self.load(job_id)
            if existing is not None:
                return existing
            job = LocalBatchJob(
                job_id=job_id,
                name=f"projects/{self._project}/locations/local/batchPredictionJobs/{job_id}",
                request_id=request_id,
                spec=spec,
                created_at=self._clock(),
            )
            self._save(job)
        self._start(job_id)
        return job
