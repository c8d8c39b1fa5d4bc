"""Jobs of the local job service: their persisted state and how they run.

A job is a folder ``<root>/<job_id>/`` holding ``job.json`` (written atomically on every
change), the replicas' logs and, for tuning, the Optuna journal and each trial's
hypertune metric file. Its id derives from the submitting request id, so submitting
the same request again returns the same job.

``LocalJobExecutor`` runs each job on a thread: a training job as its replicas
(``cascade.localcloud.replicas``), a tuning job as an Optuna study whose trials are replicas
too (``cascade.localcloud.tuner``). When a job ends, the notifier announces it (a failure as
a ``JobEvent``; a tuning job's best trial as ``model-trained``; every success as the
log entry a Vertex AI log sink forwards); a job whose announcement failed is
announced again later. ``resume`` restarts the jobs a stopped service left unfinished.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from cascade.core import vertex_job_env
from cascade.core.job_spec import (
    HyperparameterValue,
    JobState,
    TrainingJobSpec,
)
from cascade.jobs.local_runner import LocalJob
from cascade.localcloud.replicas import ReplicaPlan, run_replicas, trial_arguments
from cascade.localcloud.trial_metrics import read_trial_metric
from cascade.localcloud.tuner import TrialFailedError, run_study

__all__ = ["JobNotifier", "LocalJob", "LocalJobExecutor", "LocalJobStore", "local_job_id"]

_log = logging.getLogger("cascade.jobs.local_runner")


def local_job_id(request_id: str) -> str:
    return hashlib.sha256(f"local-job:{request_id}".encode()).hexdigest()[:16]


class LocalJobStore:
    """``<root>/<job_id>/job.json`` per job; a lock serialises writers in this process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def load(self, job_id: str) -> LocalJob | None:
        try:
            return LocalJob.model_validate_json((self.folder(job_id) / "job.json").read_text())
        except FileNotFoundError:
            return None

    def save(self, job: LocalJob) -> None:
        folder = self.folder(job.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"job.json.{os.getpid()}.{threading.get_ident()}.tmp"
        temporary.write_text(job.model_dump_json(indent=2))
        temporary.replace(folder / "job.json")

    def update(self, job_id: str, change: Callable[[LocalJob], None]) -> LocalJob:
        with self._lock:
            job = self.load(job_id)
            if job is None:
                raise KeyError(job_id)
            change(job)
            self.save(job)
            return job

    def create_once(self, job: LocalJob) -> tuple[LocalJob, bool]:
        """Store ``job`` unless its id exists; the stored job, and whether it is new."""
        with self._lock:
            existing = self.load(job.job_id)
            if existing is not None:
                return existing, False
            self.save(job)
            return job, True

    def all(self) -> list[LocalJob]:
        if not self.root.is_dir():
            return []
        jobs = [self.load(path.name) for path in sorted(self.root.iterdir()) if path.is_dir()]
        return sorted((job for job in jobs if job is not None), key=lambda job: job.created_at)


class JobNotifier(Protocol):
    def job_ended(self, job: LocalJob) -> None:
        """Publish what the job's end means; raise to have it retried later."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalJobExecutor:
    """Runs the jobs of a store, each on its own thread, like Vertex AI runs them."""

    def __init__(
        self,
        store: LocalJobStore,
        notifier: JobNotifier,
        *,
        project: str,
        trainer_module: str,
        python: str,
        base_environment: Mapping[str, str],
        cwd: Path | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self._notifier = notifier
        self._project = project
        self._trainer_module = trainer_module
        self._python = python
        self._environment = dict(base_environment)
        self._cwd = cwd
        self._clock = clock
        self._threads: dict[str, threading.Thread] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def submit(self, spec: TrainingJobSpec, request_id: str) -> LocalJob:
        """The job of ``request_id``: started now, or the one already submitted."""
        job_id = local_job_id(request_id)
        kind: Literal["custom", "tuning"] = "tuning" if spec.tuning is not None else "custom"
        noun = "hyperparameterTuningJobs" if kind == "tuning" else "customJobs"
        job, created = self.store.create_once(
            LocalJob(
                job_id=job_id,
                name=f"projects/{self._project}/locations/local/{noun}/{job_id}",
                request_id=request_id,
                kind=kind,
                spec=spec,
                created_at=self._clock(),
            )
        )
        if created:
            self.start(job.job_id)
        return job

    def start(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._threads and self._threads[job_id].is_alive():
                return
            self._cancel[job_id] = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(job_id,), daemon=True, name=f"job-{job_id}"
            )
            self._threads[job_id] = thread
        thread.start()

    def cancel(self, job_id: str) -> LocalJob:
        job = self.store.update(job_id, lambda job: setattr(job, "cancel_requested", True))
        event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        return job

    def wait(self, job_id: str, timeout: float) -> LocalJob | None:
        """Block until the job's thread ends (tests, shutdown); the job as stored."""
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.store.load(job_id)

    def resume(self) -> None:
        """After a restart: stop orphaned trainers, rerun unfinished jobs, re-announce."""
        for job in self.store.all():
            if not job.finished:
                _stop_orphans(job.pids, self._trainer_module)
                self.start(job.job_id)
            elif not job.announced:
                self.announce(job.job_id)

    def announce_pending(self) -> None:
        for job in self.store.all():
            if job.finished and not job.announced:
                self.announce(job.job_id)

    def announce(self, job_id: str) -> None:
        job = self.store.load(job_id)
        if job is None or job.announced:
            return
        try:
            self._notifier.job_ended(job)
        except Exception as error:  # noqa: BLE001 - retried by announce_pending
            _log.warning("announcing the end of %s failed, will retry: %s", job.name, error)
            return
        self.store.update(job_id, lambda stored: setattr(stored, "announced", True))

    def _run(self, job_id: str) -> None:
        job = self.store.update(job_id, self._mark_running)
        cancelled = self._cancel[job_id]
        if job.cancel_requested:
            cancelled.set()
        try:
            if job.kind == "tuning":
                self._run_tuning(job, cancelled)
            else:
                self._run_training(job, cancelled)
        except Exception as error:  # noqa: BLE001 - the job fails with the reason
            _log.exception("job %s crashed", job.name)
            self._finish(job_id, "failed", f"job runner error: {error}")
        self.announce(job_id)

    def _mark_running(self, job: LocalJob) -> None:
        job.state = "running"
        job.started_at = job.started_at or self._clock()

    def _plan(self, job: LocalJob, log_dir: Path) -> ReplicaPlan:
        return ReplicaPlan(
            spec=job.spec,
            job_id=job.job_id,
            job_name=job.name,
            output_dir=job.spec.output_dir,
            log_dir=log_dir,
            trainer_module=self._trainer_module,
            python=self._python,
            base_environment=self._environment,
            cwd=self._cwd,
        )

    def _record_pids(self, job_id: str) -> Callable[[list[int]], None]:
        def record(pids: list[int]) -> None:
            self.store.update(job_id, lambda job: setattr(job, "pids", sorted({*job.pids, *pids})))

        return record

    def _run_training(self, job: LocalJob, cancelled: threading.Event) -> None:
        plan = self._plan(job, self.store.folder(job.job_id) / "logs")
        result = run_replicas(plan, cancelled, self._record_pids(job.job_id))
        if result.succeeded:
            model_dir = vertex_job_env.model_uri(job.spec.output_dir)
            self._finish(job.job_id, "succeeded", "", model_dir=model_dir)
        else:
            self._finish(job.job_id, "cancelled" if cancelled.is_set() else "failed", result.error)

    def _run_tuning(self, job: LocalJob, cancelled: threading.Event) -> None:
        tuning = job.spec.tuning
        assert tuning is not None
        folder = self.store.folder(job.job_id)

        def run_trial(trial_id: str, parameters: dict[str, HyperparameterValue]) -> float:
            metric_file = folder / "trials" / trial_id / "hypertune" / "output.metrics"
            plan = self._plan(job, folder / "trials" / trial_id / "logs")
            plan = replace(
                plan,
                arguments=trial_arguments(parameters),
                trial_id=trial_id,
                metric_file=metric_file,
            )
            result = run_replicas(plan, cancelled, self._record_pids(job.job_id))
            if not result.succeeded:
                raise TrialFailedError(result.error)
            value = read_trial_metric(
                metric_file, tuning.metric, maximize=tuning.goal == "maximize"
            )
            if value is None:
                raise TrialFailedError(f"trial {trial_id} reported no {tuning.metric}")
            return value

        best = run_study(
            tuning,
            folder / "study.journal",
            run_trial,
            seed_text=job.request_id,
            should_stop=cancelled.is_set,
        )
        if cancelled.is_set():
            self._finish(job.job_id, "cancelled", "cancelled")
        elif best is None:
            self._finish(job.job_id, "failed", f"no trial of {job.name} completed")
        else:
            self._finish(
                job.job_id,
                "succeeded",
                "",
                model_dir=vertex_job_env.model_uri(job.spec.output_dir, best.trial_id),
                best=(best.trial_id, best.value, best.parameters),
                trials=(best.completed, best.failed),
            )

    def _finish(
        self,
        job_id: str,
        state: JobState,
        error: str,
        *,
        model_dir: str | None = None,
        best: tuple[str, float, dict[str, HyperparameterValue]] | None = None,
        trials: tuple[int, int] = (0, 0),
    ) -> None:
        def change(job: LocalJob) -> None:
            job.state, job.error, job.model_dir = state, error, model_dir
            job.finished_at = self._clock()
            job.pids = []
            job.trials_completed, job.trials_failed = trials
            if best is not None:
                job.best_trial_id, job.best_metric, job.best_hyperparameters = best

        self.store.update(job_id, change)


def _stop_orphans(pids: list[int], trainer_module: str) -> None:
    """SIGKILL trainer processes a dead service left behind (checked by command line)."""
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if trainer_module in command:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
