"""The local model server of the local cloud: Vertex AI's own client, hot swaps, CLI."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform_v1

from cascade.cli.main import cli
from cascade.core.deployment_config import DeploymentConfig
from cascade.deploy.deployer import Candidate
from cascade.deploy.local_deployer import LocalDeployer
from cascade.deploy.rollout import roll_out
from cascade.localcloud.processes import wait_until
from cascade.serving.state import read_serving_state
from tests.conftest import LocalCloud
from tests.unit.serving.saved_models import expected_positive, export_tiny_model, upload_model

pytestmark = pytest.mark.integration
CONFIG = DeploymentConfig(canary_traffic_percent=20, canary_requests=10, keep_versions=1)
ROW = {"age": 100.0, "city": "paris", "key": "row-1"}


class Progress:
    def __init__(self) -> None:
        self.done: dict[str, Any] = {}

    def record(self, **stages: Any) -> None:
        self.done.update(stages)


def model_server_url(cloud: LocalCloud) -> str:
    return cloud.refresh_state().environment["CASCADE_DEPLOY_MODEL_SERVER_URL"]


def deploy(cloud: LocalCloud, dataset: str, weight: float, tmp: Path) -> str:
    run_id = f"{dataset}-{uuid.uuid4().hex[:12]}"
    uri = upload_model(cloud.artifacts, run_id, export_tiny_model(tmp / run_id, weight=weight))
    deployer = LocalDeployer(
        cloud.artifacts, model_server_url(cloud), clock=lambda: datetime.now(UTC)
    )
    result = roll_out(deployer, Candidate(dataset, run_id, uri), CONFIG, [ROW], Progress())
    assert result.promoted, result.canary.detail
    return result.version


@pytest.fixture
def dataset() -> str:
    return f"serve-{uuid.uuid4().hex[:8]}"


def test_vertex_ai_prediction_client_over_rest_gets_predictions(
    local_cloud: LocalCloud, dataset: str, tmp_path: Path
) -> None:
    version = deploy(local_cloud, dataset, 1.0, tmp_path)
    client = aiplatform_v1.PredictionServiceClient(
        transport="rest",
        client_options={"api_endpoint": model_server_url(local_cloud)},
        credentials=AnonymousCredentials(),
    )
    endpoint = client.endpoint_path("cascade-local", "us-central1", dataset)

    missing_city = {"age": 100.0, "city": "", "key": "row-2"}  # "" is a missing string
    response = client.predict(endpoint=endpoint, instances=[ROW, missing_city])

    assert response.deployed_model_id == version
    probabilities = [list(p["probabilities"]) for p in response.predictions]
    assert probabilities[0][1] == pytest.approx(expected_positive(100.0, "paris"), abs=1e-6)
    assert probabilities[1][1] == pytest.approx(expected_positive(100.0, ""), abs=1e-6)
    assert [p["key"] for p in response.predictions] == ["row-1", "row-2"]
    with pytest.raises(gexc.BadRequest, match=r"input 'city' \(DT_STRING\) must be a string"):
        client.predict(endpoint=endpoint, instances=[{"age": 1.0, "city": 5, "key": "k"}])
    with pytest.raises(gexc.BadRequest, match="write a missing value as NaN"):
        client.predict(endpoint=endpoint, instances=[{"age": None, "city": "a", "key": "k"}])
    with pytest.raises(gexc.BadRequest, match="missing input 'key'"):
        client.predict(endpoint=endpoint, instances=[{"age": 1.0, "city": "a"}])


def test_hot_swap_under_load_fails_no_request(
    local_cloud: LocalCloud, dataset: str, tmp_path: Path
) -> None:
    deploy(local_cloud, dataset, 1.0, tmp_path)
    url = f"{model_server_url(local_cloud)}/v1/models/{dataset}:predict"
    new_answer = expected_positive(100.0, "paris", weight=-3.0)
    outcomes: list[tuple[int, float | str]] = []
    stop = threading.Event()

    def send() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(url, json={"instances": [ROW]}, timeout=10)
                except requests.RequestException as error:
                    outcomes.append((0, repr(error)))
                    continue
                if response.status_code != 200:
                    outcomes.append((response.status_code, response.text))
                    continue
                outcomes.append((200, response.json()["predictions"][0]["probabilities"][1]))

    clients = [threading.Thread(target=send) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        deploy(local_cloud, dataset, -3.0, tmp_path)  # canary, checks, promote, retire v1
        wait_until(
            lambda: bool(outcomes) and outcomes[-1][1] == pytest.approx(new_answer, abs=1e-6),
            timeout=20,
        )
        # v1's retirement reaches every worker while requests continue: each worker
        # answers many more requests after it.
        answered = len(outcomes)
        more = 50 * local_cloud.local.model_server_workers
        assert wait_until(lambda: len(outcomes) >= answered + more, timeout=30), (
            f"only {len(outcomes) - answered} requests answered after v1's retirement"
        )
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    failures = [outcome for outcome in outcomes if outcome[0] != 200]
    assert len(outcomes) > 100
    assert failures == []
    assert outcomes[-1][1] == pytest.approx(new_answer, abs=1e-6)
    state = read_serving_state(local_cloud.artifacts, dataset)
    assert state is not None
    assert [v.state for v in state[0].versions] == ["retired", "serving"]


def cascade(cloud: LocalCloud, *args: str) -> Any:
    env = {f"CASCADE_LOCAL_{k.upper()}": str(v) for k, v in cloud.local.model_dump().items()}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_predict_and_rollback(local_cloud: LocalCloud, dataset: str, tmp_path: Path) -> None:
    old = CONFIG.model_copy(update={"keep_versions": 2})
    run_id = f"{dataset}-first"
    uri = upload_model(local_cloud.artifacts, run_id, export_tiny_model(tmp_path / "a", weight=1.0))
    deployer = LocalDeployer(
        local_cloud.artifacts, model_server_url(local_cloud), clock=lambda: datetime.now(UTC)
    )
    roll_out(deployer, Candidate(dataset, run_id, uri), old, [ROW], Progress())
    uri2 = upload_model(
        local_cloud.artifacts, f"{dataset}-second", export_tiny_model(tmp_path / "b", weight=-3.0)
    )
    roll_out(deployer, Candidate(dataset, f"{dataset}-second", uri2), old, [ROW], Progress())

    rolled = cascade(local_cloud, "rollback", dataset)
    predicted = cascade(local_cloud, "predict", dataset, json.dumps(ROW))
    refused = cascade(local_cloud, "predict", dataset, json.dumps({**ROW, "age": "old"}))

    assert rolled.exit_code == 0, rolled.output
    assert "version 2 rolled back; version 1 serves 100%" in rolled.output
    answer = json.loads(predicted.output)
    assert answer["predictions"][0]["probabilities"][1] == pytest.approx(
        expected_positive(100.0, "paris", weight=1.0), abs=1e-6
    )
    assert refused.exit_code == 1
    assert "input 'age' (DT_FLOAT) must be a number" in refused.output
