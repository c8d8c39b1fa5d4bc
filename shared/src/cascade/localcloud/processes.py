"""Child processes of the local cloud: start in their own process group, stop by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ManagedProcess",
    "ProcessSpec",
    "free_loopback_port",
    "pid_alive",
    "port_accepts",
    "stop_process_group",
    "wait_until",
]


def free_loopback_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; reaps it first if it is our own exited child."""
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL what is left."""
    stop_process_groups([pid], timeout)


def stop_process_groups(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM the process groups led by ``pids`` all at once, wait up to ``timeout`` for
    them to end, then SIGKILL what is left: stopping many processes costs the slowest
    one's exit, not the sum of all of theirs."""

    def gone() -> bool:
        return all(not pid_alive(pid) and not _group_alive(pid) for pid in pids)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        if wait_until(gone, timeout):
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    cwd: Path | None = None


@dataclass
class ManagedProcess:
    spec: ProcessSpec
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - argv built from our own config
                self.spec.argv,
                env=self.spec.env,
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop it and its children
            )

    def wait_ready(self, timeout: float) -> None:
        def ready_or_dead() -> bool:
            return self.exited() or self.spec.ready()

        if not wait_until(ready_or_dead, timeout) or self.exited():
            tail = _tail(self.spec.log_path)
            raise RuntimeError(
                f"{self.spec.name} did not become ready in {timeout:.0f}s; "
                f"log {self.spec.log_path}:\n{tail}"
            )

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        stop_process_group(self.process.pid, timeout)
        self.reap()

    def reap(self) -> None:
        """Collect the exit status of a stopped process (no zombie left behind)."""
        if self.process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
