"""Shared fixtures: environment isolation and a local cloud for integration tests."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cascade.cli.sample_data import SAMPLE_PIPELINE_CONFIG
from cascade.core.grants import IDENTITY_ENV, INVOKER_ACCOUNT, service_account_email
from cascade.core.pipeline_config import push_pipeline_config
from cascade.core.topology import RetryPolicy, load_topology
from cascade.jobs.local_runner import LocalJob
from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient
from cascade.localcloud.components import check_prerequisites, gcs_spec, pubsub_spec
from cascade.localcloud.id_tokens import LOCAL_OPERATOR, bearer_header
from cascade.localcloud.local_settings import LOOPBACK, LocalCloudSettings
from cascade.localcloud.processes import (
    ManagedProcess,
    free_loopback_port,
    pid_alive,
    port_accepts,
)
from cascade.localcloud.router import function_ports, function_urls
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


def write_test_topology(path: Path, reconcile_stale_after_s: int | None = None) -> Path:
    """infra/topology.yaml plus the test-only recorder and flaky functions; with
    ``reconcile_stale_after_s``, the scheduled sweep's ``stale_after_s``."""
    document = yaml.safe_load((REPO_ROOT / "infra" / "topology.yaml").read_text())
    if reconcile_stale_after_s is not None:
        document["schedules"]["reconcile"]["data"]["stale_after_s"] = reconcile_stale_after_s
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
        self._probes: dict[str, Callable[[], bool]] | None = None

    def push_sample_config(self, dataset: str) -> None:
        """Give ``dataset`` the sample credit pipeline config (label, problem type, ...)."""
        push_pipeline_config(
            self.artifacts,
            dataset,
            SAMPLE_PIPELINE_CONFIG.encode(),
            where="sample config",
        )

    def function_url(self, function: str) -> str:
        return function_urls(self.local, load_topology(self.local.topology_file))[function]

    def call_http_function(
        self, function: str, *, email: str = LOCAL_OPERATOR, timeout: float = 60, **kwargs: Any
    ) -> requests.Response:
        """POST to an HTTP function as ``email`` would, with an ID token of the local
        issuer (the functions have no public invoker)."""
        url = self.function_url(function)
        headers = {
            **kwargs.pop("headers", {}),
            **bearer_header(self.local.id_token_key_file, url, email),
        }
        return requests.post(url, headers=headers, timeout=timeout, **kwargs)

    def event_source_auth(self, function: str) -> dict[str, str]:
        """``Authorization`` as Eventarc and Pub/Sub push send it to an event function:
        the invoker account's ID token for the function's URL."""
        invoker = service_account_email(INVOKER_ACCOUNT, self.local.runtime_settings())
        return bearer_header(self.local.id_token_key_file, self.function_url(function), invoker)

    def router_stats(self) -> dict[str, int]:
        """Delivery counters of the event router (delivered, failed attempts, dead letters)."""
        url = f"http://127.0.0.1:{self.local.router_port}/stats"
        return dict(requests.get(url, timeout=5).json())

    def refresh_state(self) -> CloudState:
        state = control.status(self.local)
        assert state is not None, "the local cloud's supervisor is gone"
        self.state = state
        return state

    def retry_policy(self, function: str) -> RetryPolicy:
        """The retry policy the router applies to ``function`` (from the cloud's topology)."""
        return load_topology(self.local.topology_file).functions[function].retry

    def scaled_backoff_s(self, function: str, failed_attempts: int) -> float:
        """How long the router waits before delivering to ``function`` again after
        ``failed_attempts`` failures: the topology's backoff times ``backoff_scale``."""
        return self.retry_policy(function).backoff_s(failed_attempts) * self.local.backoff_scale

    def longest_retry_pause_s(self) -> float:
        """The longest the router may sit silently on a message between two attempts."""
        topology = load_topology(self.local.topology_file)
        return (
            max(
                (
                    spec.retry.backoff_s(spec.retry.max_delivery_attempts - 1)
                    for spec in topology.event_functions()
                    if spec.retry.policy == "retry"
                ),
                default=0.0,
            )
            * self.local.backoff_scale
        )

    def _readiness_probes(self) -> dict[str, Callable[[], bool]]:
        """For each process the tests know, a probe of what the supervisor's readiness
        check probes (cascade.localcloud.components), without building its specs:
        building one may act (the scheduler's clears its state file)."""
        if self._probes is None:
            local, environment = self.local, self.refresh_state().environment
            probes: dict[str, Callable[[], bool]] = {
                "pubsub-emulator": functools.partial(
                    _http_ok, f"http://{local.pubsub_host}/v1/projects/{local.project}/topics"
                ),
                "gcs-emulator": functools.partial(_http_ok, f"{local.gcs_url}/storage/v1/b"),
                "event-router": functools.partial(
                    _http_ok, f"http://{LOOPBACK}:{local.router_port}/healthz"
                ),
            }
            if url := environment.get("CASCADE_JOB_SERVICE_URL"):
                probes["job-service"] = functools.partial(_http_ok, f"{url}/healthz")
            if url := environment.get("CASCADE_DEPLOY_MODEL_SERVER_URL"):
                probes["model-server"] = functools.partial(_http_ok, f"{url}/health")
            if endpoint := environment.get("CASCADE_VERTEX_API_ENDPOINT"):
                host, vertex_port = endpoint.rsplit(":", 1)
                probes["vertex-endpoint"] = functools.partial(port_accepts, host, int(vertex_port))
            topology = load_topology(local.topology_file)
            for name, port in function_ports(local, topology).items():
                probes[f"function:{name}"] = functools.partial(port_accepts, LOOPBACK, port)
            self._probes = probes
        return self._probes

    def health_problems(self) -> list[str]:
        """Why the cloud is not healthy now: a supervised process not running or not
        answering; empty when every one is up and answers."""
        state = control.status(self.local)
        if state is None:
            return ["the supervisor is gone"]
        self.state = state
        problems = [] if state.status == "ready" else [f"the cloud is {state.status}"]
        probes = self._readiness_probes()
        for name in sorted(probes.keys() | state.components.keys()):
            component = state.components.get(name)
            probe = probes.get(name)
            if component is None or component.status != "running":
                problems.append(f"{name}: {component.status if component else 'not started'}")
            elif component.pid is None or not pid_alive(component.pid):
                problems.append(f"{name}: its process {component.pid} is gone")
            elif probe is not None and not probe():
                problems.append(f"{name}: not answering")
        return problems

    def unfinished_jobs(self) -> list[str]:
        """The local job service's jobs that have not ended yet."""
        url = self.refresh_state().environment.get("CASCADE_JOB_SERVICE_URL")
        if not url:
            return []
        jobs = requests.get(f"{url}/v1/jobs", timeout=5).json()["jobs"]
        return [job.name for job in map(LocalJob.model_validate, jobs) if not job.finished]

    def wait_until_router_idle(self, timeout: float = 60) -> dict[str, int]:
        """Wait until no job runs and the router's counters have not moved for longer
        than its longest pause between two attempts (so no retry is pending); returns
        the counters."""
        quiet_s = self.longest_retry_pause_s() + 0.5
        deadline = time.monotonic() + timeout
        last: dict[str, int] | None = None
        since = time.monotonic()
        while True:
            try:
                stats: dict[str, int] | None = self.router_stats()
            except requests.RequestException:
                stats = None  # restarting: not idle
            if stats is None or stats != last or self.unfinished_jobs():
                last, since = stats, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the router was not idle for {quiet_s:.1f}s within {timeout:.0f}s "
                    f"(unfinished jobs: {self.unfinished_jobs()})"
                )
            time.sleep(0.1)

    def wait_healthy(self, timeout: float = 120, *, idle: bool = True) -> None:
        """Wait until every supervised process is up and answering and, with ``idle``,
        the router has nothing left to deliver."""
        deadline = time.monotonic() + timeout
        while problems := self.health_problems():
            if time.monotonic() > deadline:
                raise AssertionError(f"the local cloud is not healthy: {'; '.join(problems)}")
            time.sleep(0.2)
        if idle:
            self.wait_until_router_idle(max(deadline - time.monotonic(), 10))


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def started_emulators(
    state_dir: Path, names: tuple[str, ...] = ("pubsub", "gcs")
) -> Iterator[LocalCloudSettings]:
    """The named emulators alone (``pubsub``, ``gcs``) on free ports, run as the local
    user (no topology identity), stopped after; skips when their tools are missing."""
    try:
        check_prerequisites(REPO_ROOT)
    except Exception as error:
        pytest.skip(str(error))
    base = free_port_block(2)
    local = LocalCloudSettings(
        state_dir=state_dir, repo_root=REPO_ROOT, pubsub_port=base, gcs_port=base + 1
    ).absolute()
    env = {k: v for k, v in os.environ.items() if k != IDENTITY_ENV}
    specs = {"pubsub": pubsub_spec, "gcs": gcs_spec}
    processes = [ManagedProcess(specs[name](local, env)) for name in names]
    try:
        for process in processes:
            process.start()
            process.wait_ready(local.ready_timeout_s)
        yield local
    finally:
        for process in reversed(processes):
            process.stop()


@contextlib.contextmanager
def running_test_cloud(
    root: Path, *, reconcile_stale_after_s: int | None = None, **overrides: Any
) -> Iterator[LocalCloud]:
    """A private local cloud (free ports, its own state folder, the test topology)."""
    functions = len(
        yaml.safe_load((REPO_ROOT / "infra" / "topology.yaml").read_text())["functions"]
    )
    base = free_port_block(3 + functions + len(TEST_FUNCTIONS))
    settings: dict[str, Any] = {
        "state_dir": root / "state",
        "repo_root": REPO_ROOT,
        "topology_file": write_test_topology(root / "topology.yaml", reconcile_stale_after_s),
        "pubsub_port": base,
        "gcs_port": base + 1,
        "router_port": base + 2,
        "functions_base_port": base + 3,
        # Pub/Sub's 10 s minimum backoff times this: 0.5 s, so the five attempts span
        # longer than a step's bookkeeping waiting out Cloud Storage's one write a
        # second per object (the router's retries would otherwise outrun it).
        "backoff_scale": 0.05,
        # Cloud Storage's same-object write limit, at 5 writes a second per object here
        # (Google's: 1). At 1 a second every step of every run waits out 429s on its
        # run.json (written at the step's start and end), which more than doubles the
        # suites' time; the limit itself is held at 1 a second by the tests made for it
        # (tests/unit/test_gcs_write_limit.py, the baseline's compaction tests) and by
        # every `cascade up`. docs/fidelity.md, "Storage".
        "gcs_object_writes_per_s": 5.0,
        # No web console unless a test asks for one (the session's cloud serves one).
        "console_port": 0,
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
    """The session's local cloud, with the web console as `cascade up` serves it."""
    with running_test_cloud(
        tmp_path_factory.mktemp("local-cloud"), console_port=free_loopback_port()
    ) as cloud:
        yield cloud
