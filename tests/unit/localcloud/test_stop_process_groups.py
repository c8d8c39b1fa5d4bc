"""Stopping the local cloud's children: every process group is signalled at once, and a
child that ignores SIGTERM is killed once the grace period ends."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cascade.localcloud.processes import pid_alive, stop_process_groups

IGNORES_SIGTERM = """\
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: Path(sys.argv[1]).write_text("got SIGTERM"))
print("ready", flush=True)
time.sleep(600)
"""
OBEYS_SIGTERM = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"


@contextmanager
def _started(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as the supervisor starts children
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"  # its handlers are installed
        try:
            yield process
        finally:
            if pid_alive(process.pid):
                process.kill()


def test_every_group_is_stopped_and_one_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "ignorer"
    with (
        _started(OBEYS_SIGTERM) as first,
        _started(IGNORES_SIGTERM, str(marker)) as ignorer,
        _started(OBEYS_SIGTERM) as last,
    ):
        stop_process_groups([first.pid, ignorer.pid, last.pid], timeout=2.0)

        assert not any(pid_alive(process.pid) for process in (first, ignorer, last))
    assert marker.read_text() == "got SIGTERM"  # asked first, then killed


def test_groups_already_gone_are_no_error() -> None:
    with _started(OBEYS_SIGTERM) as process:
        process.kill()
        process.wait(timeout=5)
        stop_process_groups([process.pid], timeout=0.5)
        assert not pid_alive(process.pid)
