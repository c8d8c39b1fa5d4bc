"""Vertex AI's endpoint twin in-process: the unmodified Vertex AI SDK against it.

The twin (TLS; gRPC and REST on one port) forwards to a model server served over HTTP on
loopback, both over an in-memory bucket. Clients trust the local CA the way a user's
code does: ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` and ``REQUESTS_CA_BUNDLE`` (gRPC reads
its roots once a process, so the module sets them before any secure channel exists).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api import httpbody_pb2
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform, aiplatform_v1
from werkzeug.serving import make_server

from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.localcloud.tls_front import local_certificates
from cascade.localcloud.vertex_endpoint import EndpointTwin, RunningTwin, serve
from cascade.serving.app import create_app
from cascade.serving.server import ModelServer
from cascade.serving.state import DeployedVersion, ServingState, read_serving_state
from cascade.serving.uris import UriReader
from tests.unit.serving.saved_models import expected_positive, export_tiny_model

PROJECT, REGION = "cascade-local", "us-central1"
NOW = datetime(2026, 11, 27, tzinfo=UTC)
ROWS = [{"age": 100.0, "city": "paris", "key": "a"}, {"age": 30.0, "city": "lyon", "key": "b"}]


class Twin:
    def __init__(self, running: RunningTwin, store: MemoryArtifactStore) -> None:
        self.running = running
        self.store = store

    def name(self, endpoint: str = "credit") -> str:
        return f"projects/{PROJECT}/locations/{REGION}/endpoints/{endpoint}"

    def client(self, transport: str) -> aiplatform_v1.PredictionServiceClient:
        return aiplatform_v1.PredictionServiceClient(
            client_options={"api_endpoint": self.running.api_endpoint},
            credentials=AnonymousCredentials(),
            transport=transport,
        )


def serving_state(model_dirs: dict[str, Path]) -> ServingState:
    return ServingState(
        dataset="credit",
        target="local",
        endpoint="credit",
        updated_at=NOW,
        versions=[
            DeployedVersion(
                version=version,
                run_id=f"run-{version}",
                deployed_at=NOW,
                model_uri=str(directory),
                state="serving" if version == "2" else "standby",
            )
            for version, directory in model_dirs.items()
        ],
        traffic={"2": 100},
    )


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    root = tmp_path_factory.mktemp("vertex-twin")
    tls = local_certificates(root / "tls")
    saved = {name: os.environ.get(name) for name in ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",)}
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(tls.bundle)
    store = MemoryArtifactStore("cascade-artifacts")
    dirs = {"1": export_tiny_model(root / "v1"), "2": export_tiny_model(root / "v2", weight=-3)}
    store.write_json(DatasetPaths("credit").serving, serving_state(dirs))
    server = ModelServer(
        artifacts=lambda: store,
        storage=lambda: UriReader(lambda _: store),
        cache_dir=root / "cache",
        poll_interval_s=60,
    )
    server.start()
    http = make_server("127.0.0.1", 0, create_app(server), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    endpoint = EndpointTwin(
        project=PROJECT,
        region=REGION,
        model_server_url=f"http://127.0.0.1:{http.server_port}",
        serving_state=lambda dataset: read_serving_state(store, dataset),
    )
    running = serve(endpoint, 0, tls)
    try:
        yield Twin(running, store)
    finally:
        running.stop()
        http.shutdown()
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True)
def _trust_the_local_ca(twin: Twin) -> None:
    os.environ["REQUESTS_CA_BUNDLE"] = str(twin.running.tls.bundle)
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(twin.running.tls.bundle)


def positives(predictions: Any) -> list[float]:
    return [float(list(row["probabilities"])[1]) for row in predictions]


EXPECTED = [expected_positive(100.0, "paris", -3), expected_positive(30.0, "lyon", -3)]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_prediction_client_gets_the_model_servers_predictions(twin: Twin, transport: str) -> None:
    response = twin.client(transport).predict(endpoint=twin.name(), instances=ROWS)

    assert positives(response.predictions) == pytest.approx(EXPECTED, abs=1e-6)
    assert response.deployed_model_id == "2"
    assert response.model_version_id == "2"
    assert response.model == f"projects/{PROJECT}/locations/{REGION}/models/credit"
    assert response.model_display_name == "credit"


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_unknown_endpoint_is_not_found(twin: Twin, transport: str) -> None:
    name = twin.name("nothing-here")
    with pytest.raises(gexc.NotFound, match=f"Endpoint `{name}` not found"):
        twin.client(transport).predict(endpoint=name, instances=ROWS)


@pytest.mark.parametrize(
    ("transport", "error"), [("rest", gexc.BadRequest), ("grpc", gexc.InvalidArgument)]
)
def test_bad_instance_is_invalid_argument(
    twin: Twin, transport: str, error: type[Exception]
) -> None:
    # REST: HTTP 400 (BadRequest); gRPC: INVALID_ARGUMENT — as Vertex AI answers either
    with pytest.raises(error, match="city") as raised:
        twin.client(transport).predict(
            endpoint=twin.name(), instances=[{"age": 1, "city": 5, "key": "c"}]
        )
    assert getattr(raised.value, "code", None) == 400 or transport == "grpc"


@pytest.mark.parametrize(
    ("transport", "error"), [("rest", gexc.Forbidden), ("grpc", gexc.PermissionDenied)]
)
def test_another_project_is_permission_denied(
    twin: Twin, transport: str, error: type[Exception]
) -> None:
    name = f"projects/someone-else/locations/{REGION}/endpoints/credit"
    with pytest.raises(error, match=r"aiplatform\.endpoints\.predict"):
        twin.client(transport).predict(endpoint=name, instances=ROWS)


def test_rest_errors_have_googles_shape(twin: Twin) -> None:
    url = f"https://{twin.running.api_endpoint}/v1/{twin.name('nothing-here')}:predict"

    response = requests.post(
        url, json={"instances": ROWS}, verify=str(twin.running.tls.ca), timeout=30
    )

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"
    assert response.json()["error"]["code"] == 404
    unknown = requests.post(
        f"https://{twin.running.api_endpoint}/v1/{twin.name()}:predict",
        json={"instances": ROWS, "instancez": []},
        verify=str(twin.running.tls.ca),
        timeout=30,
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_get_endpoint_shows_deployed_models_and_traffic(twin: Twin, transport: str) -> None:
    client = aiplatform_v1.EndpointServiceClient(
        client_options={"api_endpoint": twin.running.api_endpoint},
        credentials=AnonymousCredentials(),
        transport=transport,
    )

    endpoint = client.get_endpoint(name=twin.name())

    assert endpoint.name == twin.name()
    assert endpoint.display_name == "credit"
    assert dict(endpoint.traffic_split) == {"2": 100}
    assert [(m.id, m.display_name, m.model_version_id) for m in endpoint.deployed_models] == [
        ("1", "credit-v1", "1"),
        ("2", "credit-v2", "2"),
    ]
    assert endpoint.deployed_models[0].model == (
        f"projects/{PROJECT}/locations/{REGION}/models/credit"
    )
    with pytest.raises(gexc.NotFound):
        client.get_endpoint(name=twin.name("nothing-here"))


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_sdk_endpoint_predict(twin: Twin, transport: str) -> None:
    aiplatform.init(
        project=PROJECT,
        location=REGION,
        api_endpoint=twin.running.api_endpoint,
        api_transport=transport,
        credentials=AnonymousCredentials(),
    )

    endpoint = aiplatform.Endpoint(twin.name())
    prediction = endpoint.predict(instances=ROWS)

    assert positives(prediction.predictions) == pytest.approx(EXPECTED, abs=1e-6)
    assert prediction.deployed_model_id == "2"
    assert endpoint.traffic_split == {"2": 100}


def test_raw_predict_passes_the_body_through(twin: Twin) -> None:
    data = json.dumps({"instances": ROWS[:1]}).encode()
    body = httpbody_pb2.HttpBody(content_type="application/json", data=data)

    answer = twin.client("grpc").raw_predict(endpoint=twin.name(), http_body=body)
    # REST: the HTTP body is the raw body (HttpBody transcoding), as with curl
    rest = requests.post(
        f"https://{twin.running.api_endpoint}/v1/{twin.name()}:rawPredict",
        data=data,
        headers={"Content-Type": "application/json"},
        verify=str(twin.running.tls.ca),
        timeout=30,
    )

    assert positives(json.loads(answer.data)["predictions"]) == pytest.approx(
        EXPECTED[:1], abs=1e-6
    )
    assert rest.status_code == 200, rest.text
    assert rest.json() == json.loads(answer.data)
    assert rest.headers["X-Vertex-AI-Deployed-Model-Id"] == "2"
    assert rest.headers["X-Vertex-AI-Model"].endswith("/models/credit")
