"""The local deployer's canary sends what TF Serving's JSON reads: NaN for a missing float."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cascade.core.deployment_config import DeploymentConfig
from cascade.core.fakes import MemoryArtifactStore
from cascade.deploy.deployer import Candidate
from cascade.deploy.local_deployer import LocalDeployer
from cascade.serving.state import read_serving_state


class _PredictServer(BaseHTTPRequestHandler):
    """Answers a predict route with one prediction per instance; keeps each body."""

    bodies: list[Any]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def do_GET(self) -> None:  # the metadata route: not served, the check goes on without it
        self.send_error(HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        answer = json.dumps({"predictions": [{"score": 0.5} for _ in body["instances"]]})
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())


@pytest.fixture
def server() -> Iterator[tuple[str, list[Any]]]:
    bodies: list[Any] = []
    handler = type("Handler", (_PredictServer,), {"bodies": bodies})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", bodies
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_a_canary_row_with_a_missing_float_is_sent_as_nan_and_answered(
    server: tuple[str, list[Any]],
) -> None:
    url, bodies = server
    deployer = LocalDeployer(MemoryArtifactStore("a"), url, clock=lambda: datetime.now(UTC))
    rows = [{"age": 41.0, "key": "cascade-smoke-0"}, {"age": math.nan, "key": "cascade-smoke-1"}]

    report = deployer.check_canary("credit", "1", rows, DeploymentConfig(canary_requests=2))

    assert report.errors == 0, report.detail
    assert report.passed
    sent = [instance["age"] for body in bodies for instance in body["instances"]]
    assert sent[0] == 41.0
    assert math.isnan(sent[1])


def test_registering_a_run_again_reuses_its_version(server: tuple[str, list[Any]]) -> None:
    """A deploy step retried after a failure past registration (its claim released, the
    recorded stages gone) must not leave an orphan version or deploy a second one."""
    url, _ = server
    artifacts = MemoryArtifactStore("artifacts")
    deployer = LocalDeployer(artifacts, url, clock=lambda: datetime(2026, 11, 30, tzinfo=UTC))
    candidate = Candidate(dataset="credit", run_id="credit-r1", model_uri="gs://a/m1")

    first = deployer.register(candidate, DeploymentConfig())
    again = deployer.register(candidate, DeploymentConfig())
    other = deployer.register(
        Candidate(dataset="credit", run_id="credit-r2", model_uri="gs://a/m2"),
        DeploymentConfig(),
    )

    assert again == first
    assert other.version != first.version
    state = read_serving_state(artifacts, "credit")
    assert state is not None
    assert [v.run_id for v in state[0].versions] == ["credit-r1", "credit-r2"]


def test_a_first_registration_writes_serving_json_in_the_datasets_mode(
    server: tuple[str, list[Any]],
) -> None:
    """The model server must never see a static dataset as dynamic: before this, the first
    serving.json said dynamic until the deploy step recorded the mode after the rollout,
    and a request in between was answered by the model."""
    url, _ = server
    artifacts = MemoryArtifactStore("artifacts")
    deployer = LocalDeployer(artifacts, url, clock=lambda: datetime(2026, 11, 30, tzinfo=UTC))
    candidate = Candidate(
        dataset="credit", run_id="credit-r1", model_uri="gs://a/m1", serving_mode="static"
    )

    deployer.register(candidate, DeploymentConfig())

    state = read_serving_state(artifacts, "credit")
    assert state is not None
    assert state[0].mode == "static"
