"""A fake-gcs-server of its own (the local cloud's Cloud Storage) for the Beam tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from cascade.localcloud.components import fake_gcs_binary
from cascade.localcloud.processes import free_loopback_port, port_accepts

START_DEADLINE_S = 20.0


@pytest.fixture(name="gcs")
def gcs_fixture(tmp_path: Path) -> Iterator[tuple[str, storage.Client]]:
    port = free_loopback_port()
    root = tmp_path / "gcs"
    (root / "landing").mkdir(parents=True)
    (root / "artifacts").mkdir()
    host = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(fake_gcs_binary()),
            *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
            *("-backend", "filesystem", "-filesystem-root", str(root)),
            *("-public-host", host, "-external-url", f"http://{host}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not port_accepts("127.0.0.1", port):
            assert process.poll() is None, "fake-gcs-server exited"
            assert time.monotonic() < deadline, "fake-gcs-server did not start"
            time.sleep(0.05)
        client = storage.Client(
            project="local",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": f"http://{host}"},
        )
        yield f"http://{host}", client
    finally:
        process.terminate()
        process.wait(timeout=10)
