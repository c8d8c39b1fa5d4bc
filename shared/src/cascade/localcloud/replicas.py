"""Run one training run (a job, or one tuning trial) as local trainer processes.

Each replica is ``python -m <trainer module> --job-spec-uri … [--name=value …]`` with the
environment Vertex AI gives a trainer, built by ``cascade.core.vertex_job_env`` (the
``AIP_*`` directories under the job's base output directory, or ``<base>/<trial id>``
for a trial; ``CLOUD_ML_JOB_ID``; ``CLOUD_ML_TRIAL_ID`` for a trial; ``TF_CONFIG`` and
``CLUSTER_SPEC`` naming a ``chief`` and ``worker`` tasks on free loopback ports when
there are several replicas). Two local additions, which Vertex AI does not set:
``CASCADE_JOB_NAME`` (the full job name, carried by ``model-trained``) and, for a trial,
``CLOUD_ML_HP_METRIC_FILE`` (each trial's own metric file: on Vertex AI every trial has
its own machine and cloudml-hypertune's default path). The run succeeds when every
replica exits 0; one failing stops the others. A parameter-server run (worker pool 2,
``ps`` tasks) follows Vertex AI's rule that the primary replica's status is the job's:
its workers and parameter servers serve until stopped, so it ends when the chief exits,
with the chief's status, and the others are stopped then (one of them failing first
fails the run).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cascade.core import vertex_job_env
from cascade.core.job_spec import HyperparameterValue, TrainingJobSpec
from cascade.localcloud.processes import free_loopback_port

__all__ = ["ReplicaPlan", "RunResult", "cluster_addresses", "run_replicas", "trial_arguments"]

_POLL_S = 0.2
_STOP_GRACE_S = 5.0
_LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class ReplicaPlan:
    """One training run: ``output_dir`` is the job's base output directory; a tuning trial
    (``trial_id``) writes under ``<output_dir>/<trial id>``, as on Vertex AI."""

    spec: TrainingJobSpec
    job_id: str
    job_name: str
    output_dir: str
    log_dir: Path
    trainer_module: str
    python: str
    base_environment: Mapping[str, str]
    cwd: Path | None = None
    arguments: list[str] = field(default_factory=list)
    trial_id: str | None = None
    metric_file: Path | None = None


@dataclass(frozen=True)
class RunResult:
    succeeded: bool
    error: str = ""


def trial_arguments(parameters: Mapping[str, HyperparameterValue]) -> list[str]:
    """``--name=value`` flags, as Vertex AI passes a trial's parameters."""

    def text(value: HyperparameterValue) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    return [f"--{name}={text(value)}" for name, value in sorted(parameters.items())]


def cluster_addresses(spec: TrainingJobSpec) -> list[list[str]]:
    """Each worker pool's replica addresses (pool 0, the chief, first), on free ports."""
    pools = [[f"127.0.0.1:{free_loopback_port()}"]]
    if spec.workers is not None:
        pools.append(
            [f"127.0.0.1:{free_loopback_port()}" for _ in range(spec.workers.replica_count)]
        )
    if spec.parameter_servers is not None:
        count = spec.parameter_servers.replica_count
        pools.append([f"127.0.0.1:{free_loopback_port()}" for _ in range(count)])
    return pools


def _tasks(spec: TrainingJobSpec) -> list[tuple[int, int]]:
    """(worker pool, replica index) of every replica: the chief, the workers, the
    parameter servers."""
    workers = spec.workers.replica_count if spec.workers is not None else 0
    servers = spec.parameter_servers.replica_count if spec.parameter_servers is not None else 0
    return [
        (0, 0),
        *((1, index) for index in range(workers)),
        *((2, index) for index in range(servers)),
    ]


def _task_name(task: tuple[int, int]) -> str:
    pool, index = task
    return f"{('chief', 'worker', 'ps')[pool]}-{index}"


def _environment(
    plan: ReplicaPlan, task: tuple[int, int], pools: list[list[str]]
) -> dict[str, str]:
    trial_id = plan.trial_id if plan.spec.tuning is not None else None
    env = {
        **plan.base_environment,
        **vertex_job_env.output_environment(plan.output_dir, trial_id),
        **vertex_job_env.job_environment(plan.job_id, trial_id),
        **vertex_job_env.cluster_environment(pools, *task, trial_id=trial_id),
        "CASCADE_JOB_NAME": plan.job_name,
        "PYTHONUNBUFFERED": "1",
    }
    if trial_id is not None and plan.metric_file is not None:
        env["CLOUD_ML_HP_METRIC_FILE"] = str(plan.metric_file)
    return env


def _start(
    plan: ReplicaPlan, task: tuple[int, int], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        plan.python,
        "-m",
        plan.trainer_module,
        f"--job-spec-uri={plan.spec.job_spec_uri}",
        *plan.arguments,
    ]
    with (plan.log_dir / f"{_task_name(task)}.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our trainer module, argv built here
            argv,
            env=env,
            cwd=plan.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_STOP_GRACE_S)


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
    except OSError:
        return ""


def run_replicas(
    plan: ReplicaPlan,
    cancelled: threading.Event,
    on_start: Callable[[list[int]], None] | None = None,
) -> RunResult:
    """Start every replica, wait for all; ``on_start`` gets their pids (to persist)."""
    tasks = _tasks(plan.spec)
    # One replica takes no port: Vertex AI gives it no TF_CONFIG / CLUSTER_SPEC.
    pools = cluster_addresses(plan.spec) if len(tasks) > 1 else [["127.0.0.1:0"]]
    processes = [_start(plan, task, _environment(plan, task, pools)) for task in tasks]
    if on_start is not None:
        on_start([process.pid for process in processes])
    chief_decides = plan.spec.parameter_servers is not None
    try:
        while any(process.poll() is None for process in processes):
            if chief_decides and processes[0].poll() is not None:
                return _first_failure(processes[:1], tasks[:1], plan.log_dir) or RunResult(True)
            failed = _first_failure(processes, tasks, plan.log_dir)
            if failed is not None or cancelled.wait(_POLL_S):
                _stop(processes)
                return failed or RunResult(False, "cancelled")
        return _first_failure(processes, tasks, plan.log_dir) or RunResult(True)
    finally:
        _stop(processes)


def _first_failure(
    processes: list[subprocess.Popen[bytes]], tasks: list[tuple[int, int]], log_dir: Path
) -> RunResult | None:
    for process, task in zip(processes, tasks, strict=True):
        code = process.poll()
        if code not in (None, 0):
            tail = _tail(log_dir / f"{_task_name(task)}.log")
            return RunResult(
                False, f"replica {_task_name(task)} exited with status {code}:\n{tail}"
            )
    return None
