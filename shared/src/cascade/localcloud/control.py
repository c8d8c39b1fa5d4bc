"""``cascade up`` / ``down`` / ``status``: drive the supervisor from the command line."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time

from cascade.core.settings import Settings
from cascade.localcloud.components import check_prerequisites
from cascade.localcloud.fingerprint import code_fingerprint
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.processes import pid_alive, stop_process_group, wait_until
from cascade.localcloud.state_file import CloudState, read_state, state_path

__all__ = ["LocalCloudError", "down", "running_settings", "status", "up"]


_log = logging.getLogger("cascade.localcloud")


class LocalCloudError(RuntimeError):
    """The local cloud could not be started or stopped; the message says why."""


def status(local: LocalCloudSettings) -> CloudState | None:
    """The current state, or None when no supervisor is running."""
    state = read_state(local.state_dir)
    if state is None or not pid_alive(state.supervisor_pid):
        return None
    return state


def running_settings(local: LocalCloudSettings) -> Settings:
    """The Settings of the running local cloud's processes (its ports are chosen at
    start), with their environment applied to this process too: the clients that read
    the environment themselves (Bigtable's ``BIGTABLE_EMULATOR_HOST``, the precomputed
    store's ``CASCADE_PRECOMPUTED_*``) reach the same emulators."""
    state = status(local.absolute())
    if state is None or state.status != "ready":
        raise LocalCloudError("the local cloud is not running: start it with `cascade up`")
    os.environ.update(state.environment)
    return Settings()


def up(local: LocalCloudSettings, *, timeout_s: float = 180) -> CloudState:
    """Start the local cloud, or return the running one (idempotent).

    A running cloud whose processes started with other code than the working tree's
    (a pull, an edit) is restarted: processes keep the code they imported.
    """
    local = local.absolute()
    running = status(local)
    if running is not None and running.status == "ready":
        if running.code_fingerprint == code_fingerprint(local):
            return running
        _log.warning("the code changed since the local cloud started; restarting it")
    if running is not None:  # stale code, starting, or half-failed: start over cleanly
        down(local)
    check_prerequisites(local.repo_root)
    local.state_dir.mkdir(parents=True, exist_ok=True)
    state_path(local.state_dir).unlink(missing_ok=True)
    with (local.state_dir / "supervisor.log").open("ab") as log:
        launcher = subprocess.run(
            [sys.executable, "-m", "cascade.localcloud.supervisor", "--detach"],
            env=local.child_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=60,
        )
    if launcher.returncode != 0:
        raise LocalCloudError(f"could not launch the supervisor; see {local.state_dir}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(local.state_dir)
        if state is not None and state.status == "ready":
            return state
        if state is not None and state.status == "failed":
            wait_until(functools.partial(_exited, state.supervisor_pid), 60)
            raise LocalCloudError(f"local cloud failed to start: {state.error}")
        if state is not None and not pid_alive(state.supervisor_pid):
            raise LocalCloudError(
                f"the supervisor exited; see {local.state_dir / 'supervisor.log'}"
            )
        time.sleep(0.2)
    down(local)
    raise LocalCloudError(f"local cloud not ready after {timeout_s:.0f}s")


def _exited(pid: int) -> bool:
    return not pid_alive(pid)


def down(local: LocalCloudSettings, *, timeout_s: float = 60) -> bool:
    """Stop the supervisor and every child it started; False if nothing was running."""
    local = local.absolute()
    state = read_state(local.state_dir)
    if state is None:
        return False
    if pid_alive(state.supervisor_pid):
        stop_process_group(state.supervisor_pid, timeout=timeout_s)
    for component in state.components.values():  # the supervisor died without cleaning up
        if component.pid is not None and pid_alive(component.pid):
            stop_process_group(component.pid)
    wait_until(lambda: not pid_alive(state.supervisor_pid), 5)
    state_path(local.state_dir).unlink(missing_ok=True)
    return True
