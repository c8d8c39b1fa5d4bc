"""The local job service's batch prediction jobs (Vertex AI's BatchPredictionJob here).

Each job runs ``python -m cascade.batch.task`` (the scoring code the CLI runs too) in
its own process, with the trainers' environment: as the Vertex AI jobs' account, so the
topology's grants of that account (the predictions dataset, the jobs user role) are what
it may do. Jobs persist as ``<root>/<job_id>/job.json`` with the task's output in
``task.log``; a restarted service stops a task its predecessor left running and runs
the job again (the batch is idempotent: its manifest, and insert ids per row).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from cascade.batch.jobs import BatchJobSpec, LocalBatchJob
from cascade.core.job_spec import JobState

__all__ = ["BATCH_TASK_MODULE", "LocalBatchExecutor", "local_batch_job_id"]

_log = logging.getLogger("cascade.localcloud.batch_jobs")
BATCH_TASK_MODULE = "cascade.batch.task"
_ERROR_CHARS = 4000


def local_batch_job_id(request_id: str) -> str:
    return hashlib.sha256(f"local-batch-job:{request_id}".encode()).hexdigest()[:16]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalBatchExecutor:
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
        self.root = root
        self._project = project
        self._python = python
        self._environment = dict(base_environment)
        self._cwd = cwd
        self._clock = clock
        self._lock = threading.RLock()
        self._threads: dict[str, threading.Thread] = {}

    # -- the store -----------------------------------------------------------------------

    def _path(self, job_id: str) -> Path:
        return self.root / job_id / "job.json"

    def load(self, job_id: str) -> LocalBatchJob | None:
        try:
            return LocalBatchJob.model_validate_json(self._path(job_id).read_text())
        except FileNotFoundError:
            return None

    def all(self) -> list[LocalBatchJob]:
        if not self.root.is_dir():
            return []
        found = (self.load(folder.name) for folder in sorted(self.root.iterdir()))
        return [job for job in found if job is not None]

    def _save(self, job: LocalBatchJob) -> None:
        path = self._path(job.job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"job.json.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(job.model_dump_json(indent=2))
        temporary.replace(path)

    def _update(self, job_id: str, change: Callable[[LocalBatchJob], None]) -> LocalBatchJob:
        with self._lock:
            job = self.load(job_id)
            if job is None:
                raise KeyError(job_id)
            change(job)
            self._save(job)
            return job

    # -- jobs ----------------------------------------------------------------------------

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

    def resume(self) -> None:
        """After a restart: stop the tasks a dead service left, run unfinished jobs again."""
        for job in self.all():
            if not job.finished:
                if job.pid is not None:
                    _stop_orphan(job.pid)
                self._start(job.job_id)

    def wait(self, job_id: str, timeout: float) -> LocalBatchJob | None:
        """Block until the job's thread ends (tests, shutdown); the job as stored."""
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.load(job_id)

    def _start(self, job_id: str) -> None:
        with self._lock:
            running = self._threads.get(job_id)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(
                target=self._run, args=(job_id,), daemon=True, name=f"batch-{job_id}"
            )
            self._threads[job_id] = thread
        thread.start()

    def _run(self, job_id: str) -> None:
        try:
            job = self._update(job_id, self._mark_running)
            log_path = self.root / job_id / "task.log"
            with log_path.open("ab") as log:
                process = subprocess.Popen(  # noqa: S603 - our own module, argv from a checked spec
                    [self._python, "-m", BATCH_TASK_MODULE, *job.spec.task_arguments()],
                    env=self._environment,
                    cwd=self._cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self._update(job_id, lambda stored: setattr(stored, "pid", process.pid))
                code = process.wait()
            if code == 0:
                self._finish(job_id, "succeeded", "")
            else:
                self._finish(job_id, "failed", _last_lines(log_path) or f"exit code {code}")
        except Exception as error:  # noqa: BLE001 - the job fails with the reason
            _log.exception("batch job %s crashed", job_id)
            self._finish(job_id, "failed", f"job runner error: {error}")

    def _mark_running(self, job: LocalBatchJob) -> None:
        job.state = "running"
        job.started_at = job.started_at or self._clock()

    def _finish(self, job_id: str, state: JobState, error: str) -> None:
        def change(job: LocalBatchJob) -> None:
            job.state, job.error, job.pid = state, error[-_ERROR_CHARS:], None
            job.finished_at = self._clock()

        self._update(job_id, change)


def _last_lines(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _stop_orphan(pid: int) -> None:
    """SIGKILL a batch task a dead service left behind (checked by its command line)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return
    if BATCH_TASK_MODULE in command:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
