"""Shared fixtures: environment isolation and a local cloud for integration tests."""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cascade.cli.sample_data import SAMPLE_PIPELINE_CONFIG
from cascade.core.pipeline_config import push_pipeline_config
from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.state_file import CloudState

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_FUNCTIONS: dict[str, dict[str, Any]] = {
    "recorder-storage": {
        "source": "tests/functions/recorder",
        "entry_point": "record",
        "signature": "cloudevent",
        "trigger": {"type": "storage", "bucket": "landing"},
    },
    "recorder-topic": {
        "source": "tests/functions/recorder",
        "entry_point": "record",
        "signature": "cloudevent",
        "trigger": {"type": "topic", "topic": "test-recorded"},
    },
    "flaky": {
        "source": "tests/functions/flaky",
        "entry_point": "flaky",
        "signature": "cloudevent",
        "trigger": {"type": "topic", "topic": "test-flaky"},
    },
}


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free loopback ports, below the kernel's ephemeral
    range (32768+), so no outgoing connection or port-0 listener can take one meanwhile."""
    for _ in range(200):
        base = random.randint(20000, 32700 - size)
        if all(_free(port) for port in range(base, base + size)):
            return base
    raise RuntimeError("no free port block")


def write_test_topology(path: Path) -> Path:
    """infra/topology.yaml plus the test-only recorder and flaky functions."""
    document = yaml.safe_load((REPO_ROOT / "infra" / "topology.yaml").read_text())
    document["topics"]["test-recorded"] = {"description": "recorded by recorder-topic"}
    document["topics"]["test-flaky"] = {"description": "delivered to the flaky function"}
    document["functions"].update(TEST_FUNCTIONS)
    path.write_text(yaml.safe_dump(document))
    return path


class LocalCloud(LocalCloudClient):
    """A running local cloud for tests: the client API plus where things are."""

    def __init__(self, local: LocalCloudSettings, state: CloudState, record_dir: Path) -> None:
        super().__init__(local.runtime_settings())
        self.local = local
        self.state = state
        self.record_dir = record_dir

    def push_sample_config(self, dataset: str) -> None:
        """Give ``dataset`` the sample credit pipeline config (label, problem type, ...)."""
        push_pipeline_config(
            self.artifacts, dataset, SAMPLE_PIPELINE_CONFIG.encode(), where="sample config"
        )

    def router_stats(self) -> dict[str, int]:
        """Delivery counters of the event router (delivered, failed attempts, dead letters)."""
        url = f"http://127.0.0.1:{self.local.router_port}/stats"
        return dict(requests.get(url, timeout=5).json())

    def refresh_state(self) -> CloudState:
        state = control.status(self.local)
        assert state is not None, "the local cloud's supervisor is gone"
        self.state = state
        return state


@contextlib.contextmanager
def running_test_cloud(root: Path, **overrides: Any) -> Iterator[LocalCloud]:
    """A private local cloud (free ports, its own state folder, the test topology)."""
    functions = len(
        yaml.safe_load((REPO_ROOT / "infra" / "topology.yaml").read_text())["functions"]
    )
    base = free_port_block(3 + functions + len(TEST_FUNCTIONS))
    settings: dict[str, Any] = {
        "state_dir": root / "state",
        "repo_root": REPO_ROOT,
        "topology_file": write_test_topology(root / "topology.yaml"),
        "pubsub_port": base,
        "gcs_port": base + 1,
        "router_port": base + 2,
        "functions_base_port": base + 3,
        "backoff_scale": 0.01,
    }
    local = LocalCloudSettings(**{**settings, **overrides}).absolute()
    record_dir = root / "records"
    saved = dict(os.environ)
    os.environ["CASCADE_TEST_RECORD_DIR"] = str(record_dir)
    try:
        state = control.up(local)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield LocalCloud(local, state, record_dir)
    finally:
        control.down(local)


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with running_test_cloud(tmp_path_factory.mktemp("local-cloud")) as cloud:
        yield cloud
