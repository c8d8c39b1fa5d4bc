"""fake-gcs-server behind ``cascade.localcloud.gcs_front``, as the local cloud runs them."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from cascade.localcloud.components import fake_gcs_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ok(url: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)  # polling a condition with a deadline
    raise AssertionError(f"{url} never answered")


@contextlib.contextmanager
def running_gcs_front(
    root: Path, *, writes_per_s: float = 1.0, front: bool = True
) -> Iterator[str]:
    """fake-gcs-server (in memory) behind the front; yields the URL clients use.
    ``front=False``: fake-gcs-server alone (no write limit), for comparisons."""
    backend_port, front_port = free_port(), free_port()
    public_port = front_port if front else backend_port
    url = f"http://127.0.0.1:{public_port}"
    with contextlib.ExitStack() as stack:
        backend_log = stack.enter_context((root / "gcs.log").open("wb"))
        front_log = stack.enter_context((root / "front.log").open("wb"))
        argv = [
            str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1",
            "-port", str(backend_port), "-backend", "memory",
            "-public-host", f"127.0.0.1:{public_port}", "-external-url", url,
            "-log-level", "error",
        ]  # fmt: skip
        processes = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=backend_log)]
        if front:
            front_argv = [
                sys.executable, "-m", "cascade.localcloud.gcs_front",
                "--port", str(front_port), "--backend", f"http://127.0.0.1:{backend_port}",
                "--writes-per-s", str(writes_per_s),
            ]  # fmt: skip
            processes.append(subprocess.Popen(front_argv, stderr=front_log))
        try:
            wait_ok(f"{url}/storage/v1/b")
            yield url
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(10)
