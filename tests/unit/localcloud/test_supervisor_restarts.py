"""The supervisor's restarts: a crash loop is stopped after ``max_restarts`` a minute,
but a function instance terminated for its memory is always replaced, as Cloud Run
replaces it, so one oversized event cannot take the function down for every other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cascade.core.topology import load_topology
from cascade.localcloud.function_host import MEMORY_LIMIT_EXIT
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.processes import ManagedProcess
from cascade.localcloud.supervisor import Supervisor

REPO_ROOT = Path(__file__).resolve().parents[3]


class _Exited:
    def __init__(self, returncode: int) -> None:
        self.returncode = returncode
        self.pid = 4242


@pytest.fixture
def supervisor(tmp_path: Path) -> Supervisor:
    local = LocalCloudSettings(state_dir=tmp_path / "state", repo_root=REPO_ROOT, max_restarts=3)
    local.state_dir.mkdir()
    return Supervisor(local, load_topology(REPO_ROOT / "infra" / "topology.yaml"))


def _exits_with(
    process: ManagedProcess, returncode: int, monkeypatch: pytest.MonkeyPatch, last_line: str = ""
) -> list[int]:
    """``process`` as one that has exited with ``returncode`` after logging
    ``last_line``, whose restarts are counted."""
    started: list[int] = []
    process.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    process.spec.log_path.write_text(f"booting\n{last_line}\n" if last_line else "booting\n")

    def start() -> None:
        started.append(1)
        process.process = _Exited(returncode)  # type: ignore[assignment]

    monkeypatch.setattr(process, "start", start)
    monkeypatch.setattr(process, "wait_ready", lambda timeout: None)
    process.process = _Exited(returncode)  # type: ignore[assignment]
    return started


MEMORY_KILLED = "Memory limit of 2048 MiB exceeded with 2100 MiB used. Consider increasing it"


@pytest.mark.parametrize(
    ("returncode", "last_line", "restarted", "state"),
    [
        (MEMORY_LIMIT_EXIT, MEMORY_KILLED, 10, "running"),
        (MEMORY_LIMIT_EXIT, "", 3, "failed"),  # killed by someone else: a crash
        (1, MEMORY_KILLED, 3, "failed"),
    ],
    ids=["memory-kill", "sigkill-without-the-line", "crash"],
)
def test_a_function_killed_for_memory_is_always_replaced_a_crash_loop_is_not(
    supervisor: Supervisor,
    monkeypatch: pytest.MonkeyPatch,
    returncode: int,
    last_line: str,
    restarted: int,
    state: str,
) -> None:
    [validate] = [p for p in supervisor.functions if p.spec.name == "function:validate"]
    started = _exits_with(validate, returncode, monkeypatch, last_line)

    for _ in range(10):
        supervisor.restart(validate)

    assert len(started) == restarted
    assert supervisor.state.components["function:validate"].status == state


def test_another_process_killed_the_same_way_keeps_its_restart_budget(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _exits_with(supervisor.router, MEMORY_LIMIT_EXIT, monkeypatch, MEMORY_KILLED)

    for _ in range(10):
        supervisor.restart(supervisor.router)

    assert len(started) == 3
    assert supervisor.state.components[supervisor.router.spec.name].status == "failed"


def test_the_memory_kill_is_what_popen_reports_for_a_sigkill(tmp_path: Path) -> None:
    process = subprocess.Popen(["sleep", "30"])
    process.kill()
    assert process.wait(timeout=30) == MEMORY_LIMIT_EXIT
