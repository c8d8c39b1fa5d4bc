"""Run one training run (a job, or one tuning trial) as local trainer processes.

Each replica is ``python -m <trainer module> --job-spec-uri … [--name=value …]`` with the
environment Vertex AI gives a trainer: ``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR``,
``AIP_TENSORBOARD_LOG_DIR``, ``CLOUD_ML_JOB_ID`` (and ``CASCADE_JOB_NAME``, the full
name), for a trial ``CLOUD_ML_TRIAL_ID`` / ``CLOUD_ML_HP_METRIC_FILE`` /
``CLOUD_ML_HP_METRIC_TAG``, and for several replicas ``TF_CONFIG`` and ``CLUSTER_SPEC``
naming a ``chief`` and ``worker`` tasks on free loopback ports. The run succeeds when
every replica exits 0; one failing stops the others.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cascade.core.job_spec import HyperparameterValue, TrainingJobSpec
from cascade.localcloud.processes import free_loopback_port

__all__ = ["ReplicaPlan", "RunResult", "cluster_addresses", "run_replicas", "trial_arguments"]

_POLL_S = 0.2
_STOP_GRACE_S = 5.0
_LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class ReplicaPlan:
    """One training run: ``output_dir`` is its base (the job's, or ``<job>/<trial id>``)."""

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


def cluster_addresses(spec: TrainingJobSpec) -> dict[str, list[str]]:
    cluster = {"chief": [f"127.0.0.1:{free_loopback_port()}"]}
    if spec.workers is not None:
        cluster["worker"] = [
            f"127.0.0.1:{free_loopback_port()}" for _ in range(spec.workers.replica_count)
        ]
    return cluster


def _tasks(spec: TrainingJobSpec) -> list[tuple[str, int]]:
    workers = spec.workers.replica_count if spec.workers is not None else 0
    return [("chief", 0), *(("worker", index) for index in range(workers))]


def _environment(
    plan: ReplicaPlan, task: tuple[str, int], cluster: dict[str, list[str]] | None
) -> dict[str, str]:
    base = plan.output_dir.rstrip("/")
    env = {
        **plan.base_environment,
        "AIP_MODEL_DIR": f"{base}/model",
        "AIP_CHECKPOINT_DIR": f"{base}/checkpoints",
        "AIP_TENSORBOARD_LOG_DIR": f"{base}/tensorboard",
        "CLOUD_ML_JOB_ID": plan.job_id,
        "CASCADE_JOB_NAME": plan.job_name,
        "PYTHONUNBUFFERED": "1",
    }
    if plan.trial_id is not None and plan.metric_file is not None and plan.spec.tuning:
        env["CLOUD_ML_TRIAL_ID"] = plan.trial_id
        env["CLOUD_ML_HP_METRIC_FILE"] = str(plan.metric_file)
        env["CLOUD_ML_HP_METRIC_TAG"] = plan.spec.tuning.metric
    if cluster is not None:
        task_type, index = task
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": task_type, "index": index}, "job": {}}
        )
        env["CLUSTER_SPEC"] = json.dumps(
            {
                "cluster": {
                    "workerpool0": cluster["chief"],
                    "workerpool1": cluster.get("worker", []),
                },
                "task": {
                    "type": "workerpool0" if task_type == "chief" else "workerpool1",
                    "index": index,
                },
            }
        )
    return env


def _start(
    plan: ReplicaPlan, task: tuple[str, int], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        plan.python,
        "-m",
        plan.trainer_module,
        f"--job-spec-uri={plan.spec.job_spec_uri}",
        *plan.arguments,
    ]
    with (plan.log_dir / f"{task[0]}-{task[1]}.log").open("ab") as log:
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
    cluster = cluster_addresses(plan.spec) if len(tasks) > 1 else None
    processes = [_start(plan, task, _environment(plan, task, cluster)) for task in tasks]
    if on_start is not None:
        on_start([process.pid for process in processes])
    try:
        while any(process.poll() is None for process in processes):
            failed = _first_failure(processes, tasks, plan.log_dir)
            if failed is not None or cancelled.wait(_POLL_S):
                _stop(processes)
                return failed or RunResult(False, "cancelled")
        return _first_failure(processes, tasks, plan.log_dir) or RunResult(True)
    finally:
        _stop(processes)


def _first_failure(
    processes: list[subprocess.Popen[bytes]], tasks: list[tuple[str, int]], log_dir: Path
) -> RunResult | None:
    for process, (task_type, index) in zip(processes, tasks, strict=True):
        code = process.poll()
        if code not in (None, 0):
            tail = _tail(log_dir / f"{task_type}-{index}.log")
            return RunResult(
                False, f"replica {task_type}-{index} exited with status {code}:\n{tail}"
            )
    return None
