"""What the local job service's batch and Beam jobs share: one task process a job.

A job is a pydantic record persisted as ``<root>/<job_id>/job.json`` (written whole,
through a temporary file), run as ``python -m <module> <arguments>`` in its own process
group with the service's environment, its output in ``<root>/<job_id>/<log name>``. A
restarted service stops a task its predecessor left running (recognised by its command
line) and runs the job again: every task this runs is idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from cascade.core.job_spec import JobState, LocalTaskJob

__all__ = ["TaskJobs"]

_ERROR_CHARS = 4000
_log = logging.getLogger("cascade.localcloud.task_jobs")


JobT = TypeVar("JobT", bound=LocalTaskJob)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TaskJobs(Generic[JobT]):
    """The store and the task processes of one kind of job (``model``)."""

    model: type[JobT]
    module: str  # the task's module: python -m <module>
    log_name: str  # the task's output, beside job.json
    kind: str  # in thread names and log lines

    def __init__(
        self,
        root: Path,
        *,
        python: str,
        base_environment: Mapping[str, str],
        cwd: Path | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.root = root
        self._python = python
        self._environment = dict(base_environment)
        self._cwd = cwd
        self._clock = clock
        self._lock = threading.RLock()
        self._threads: dict[str, threading.Thread] = {}

    def arguments(self, job: JobT) -> list[str]:
        """The task's command-line arguments after ``-m <module>``."""
        raise NotImplementedError

    def ended(self, job_id: str) -> None:
        """Called once the task's end is stored (announcements, for example)."""

    # -- the store -----------------------------------------------------------------------

    def _path(self, job_id: str) -> Path:
        return self.root / job_id / "job.json"

    def load(self, job_id: str) -> JobT | None:
        try:
            return self.model.model_validate_json(self._path(job_id).read_text())
        except FileNotFoundError:
            return None

    def all(self) -> list[JobT]:
        if not self.root.is_dir():
            return []
        found = (self.load(folder.name) for folder in sorted(self.root.iterdir()))
        return [job for job in found if job is not None]

    def _save(self, job: JobT) -> None:
        path = self._path(job.job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"job.json.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(job.model_dump_json(indent=2))
        temporary.replace(path)

    def _update(self, job_id: str, change: Callable[[JobT], None]) -> JobT:
        with self._lock:
            job = self.load(job_id)
            if job is None:
                raise KeyError(job_id)
            change(job)
            self._save(job)
            return job

    # -- the tasks -----------------------------------------------------------------------

    def resume(self) -> None:
        """After a restart: stop the tasks a dead service left, run unfinished jobs again."""
        for job in self.all():
            if not job.finished:
                if job.pid is not None:
                    self._stop_orphan(job.pid)
                self._start(job.job_id)

    def wait(self, job_id: str, timeout: float) -> JobT | None:
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
                target=self._run, args=(job_id,), daemon=True, name=f"{self.kind}-{job_id}"
            )
            self._threads[job_id] = thread
        thread.start()

    def _run(self, job_id: str) -> None:
        try:
            job = self._update(job_id, self._mark_running)
            log_path = self.root / job_id / self.log_name
            with log_path.open("ab") as log:
                process = subprocess.Popen(  # noqa: S603 - our own module, checked arguments
                    [self._python, "-m", self.module, *self.arguments(job)],
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
            _log.exception("%s job %s crashed", self.kind, job_id)
            self._finish(job_id, "failed", f"job runner error: {error}")
        self.ended(job_id)

    def _mark_running(self, job: JobT) -> None:
        job.state = "running"
        job.started_at = job.started_at or self._clock()

    def _finish(self, job_id: str, state: JobState, error: str) -> None:
        def change(job: JobT) -> None:
            job.state, job.error, job.pid = state, error[-_ERROR_CHARS:], None
            job.finished_at = self._clock()

        self._update(job_id, change)

    def _stop_orphan(self, pid: int) -> None:
        """SIGKILL a task a dead service left behind (checked by its command line)."""
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return
        if f"-m {self.module} " in f"{command} ":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _last_lines(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
