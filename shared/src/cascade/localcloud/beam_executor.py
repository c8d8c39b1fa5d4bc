"""The local job service's Beam jobs (Dataflow's Flex Template jobs here).

A launch is checked as Dataflow checks it (``cascade.jobs.beam_jobs.launch_refusal``;
a second active job of one name is ALREADY_EXISTS), then runs ``python -m cascade.beam``
in .venv-beam with the template's parameters as flags, on Beam's FnApiRunner, with the
service's environment (the emulators' hosts). Jobs persist as ``<root>/<job_id>/job.json``
with the pipeline's output in ``job.log``. When a job ends, its end is announced on
``job-events`` as the log entry Dataflow's job messages become through the log sink
(``dataflow_job_end_log_entry``); an announcement that fails is retried by
``announce_pending``. A restarted service stops a pipeline its predecessor left running
and runs the job again (the pipeline's outputs are written whole, again identical).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cascade.jobs.beam_jobs import LocalDataflowJob, dataflow_job_end_log_entry, launch_refusal
from cascade.localcloud.task_jobs import TaskJobs

__all__ = ["BEAM_MODULE", "DataflowLaunchRefused", "LocalBeamExecutor", "local_dataflow_job_id"]

_log = logging.getLogger("cascade.localcloud.beam_jobs")
BEAM_MODULE = "cascade.beam"


class DataflowLaunchRefused(Exception):  # noqa: N818 - mirrors Google's status names
    """Dataflow's refusal of a launch: ``status`` 400 (INVALID_ARGUMENT) or 409
    (ALREADY_EXISTS)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def local_dataflow_job_id() -> str:
    """A new job's id (Dataflow gives every launch a new id, whatever its name)."""
    return uuid.uuid4().hex[:16]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalBeamExecutor(TaskJobs[LocalDataflowJob]):
    model = LocalDataflowJob
    module = BEAM_MODULE
    log_name = "job.log"
    kind = "dataflow"

    def __init__(
        self,
        root: Path,
        *,
        project: str,
        region: str,
        python: str,
        base_environment: Mapping[str, str],
        announce: Callable[[dict[str, Any]], None],
        cwd: Path | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__(
            root, python=python, base_environment=base_environment, cwd=cwd, clock=clock
        )
        self._project = project
        self._region = region
        self._announce = announce

    def arguments(self, job: LocalDataflowJob) -> list[str]:
        return [f"--{name}={value}" for name, value in sorted(job.parameters.items())]

    def ended(self, job_id: str) -> None:
        self._announce_end(job_id)

    def launch(self, job_name: str, parameters: dict[str, str]) -> LocalDataflowJob:
        """Start a job, or refuse as Dataflow would (``DataflowLaunchRefused``)."""
        refusal = launch_refusal(job_name, parameters)
        if refusal:
            raise DataflowLaunchRefused(400, refusal)
        with self._lock:
            if any(job.name == job_name and not job.finished for job in self.all()):
                raise DataflowLaunchRefused(409, f"a job named {job_name} is already active")
            created = self._clock()
            job = LocalDataflowJob(
                job_id=local_dataflow_job_id(),
                name=job_name,
                parameters=dict(parameters),
                created_at=created,
            )
            self._save(job)
        self._start(job.job_id)
        return job

    def announce_pending(self) -> None:
        """Announce the ends not yet announced (the emulator was down, the service died)."""
        for job in self.all():
            if job.finished and not job.announced:
                self._announce_end(job.job_id)

    def _announce_end(self, job_id: str) -> None:
        job = self.load(job_id)
        if job is None or not job.finished or job.announced:
            return
        finished = job.finished_at or self._clock()
        entry = dataflow_job_end_log_entry(
            project=self._project,
            region=self._region,
            job=job,
            timestamp=finished.isoformat().replace("+00:00", "Z"),
            insert_id=uuid.uuid4().hex,
        )
        try:
            self._announce(entry)
        except Exception as error:  # noqa: BLE001 - announce_pending tries again
            _log.warning("could not announce the end of Beam job %s: %s", job_id, error)
            return
        self._update(job_id, lambda stored: setattr(stored, "announced", True))
