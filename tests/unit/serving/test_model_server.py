"""The model server in-process: TF Serving and Vertex routes, input checks, traffic, swaps."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.serving.app import create_app
from cascade.serving.server import ModelServer
from cascade.serving.state import DeployedVersion, ServingState
from cascade.serving.uris import UriReader
from tests.unit.serving.saved_models import expected_positive, export_tiny_model

NOW = datetime(2026, 11, 27, tzinfo=UTC)
WEIGHTS = {"1": 1.0, "2": -3.0}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    dirs = {v: export_tiny_model(root / f"v{v}", weight=w) for v, w in WEIGHTS.items()}
    dirs["broken-dir"] = root / "missing"
    return dirs


def serving(
    model_dirs: dict[str, Path], split: dict[str, int], uris: dict[str, str] | None = None
) -> ServingState:
    uris = uris or {}
    return ServingState(
        dataset="credit",
        target="local",
        endpoint="credit",
        updated_at=NOW,
        versions=[
            DeployedVersion(
                version=v,
                run_id=f"run-{v}",
                deployed_at=NOW,
                model_uri=uris[v] if v in uris else str(model_dirs[v]),
                state="serving" if v in split else "standby",
            )
            for v in sorted({*split, *uris})
        ],
        traffic=split,
    )


class Harness:
    def __init__(self, store: MemoryArtifactStore, server: ModelServer) -> None:
        self.store = store
        self.server = server
        self.client = Client(create_app(server))

    def publish(self, state: ServingState) -> None:
        self.store.write_json(DatasetPaths("credit").serving, state)
        self.server.sync()

    def predict(self, instances: Any, path: str = "/v1/models/credit:predict") -> Any:
        return self.client.post(path, data=json.dumps({"instances": instances}))


@pytest.fixture
def harness(tmp_path: Path, model_dirs: dict[str, Path]) -> Iterator[Harness]:
    store = MemoryArtifactStore("cascade-artifacts")
    store.write_json(DatasetPaths("credit").serving, serving(model_dirs, {"1": 100}))
    server = ModelServer(
        artifacts=lambda: store,
        storage=lambda: UriReader(lambda _: store),
        cache_dir=tmp_path / "cache",
        poll_interval_s=60,
    )
    server.start()
    yield Harness(store, server)
    server.stop()


def positive(response: Any) -> list[float]:
    assert response.status_code == 200, response.get_json()
    return [row["probabilities"][1] for row in response.get_json()["predictions"]]


def test_tf_serving_predict_batches_rows_and_passes_the_key(harness: Harness) -> None:
    rows = [
        {"age": 30, "city": "paris", "key": "a-1"},
        {"age": float("nan"), "city": "", "key": "b-7"},  # missing values: NaN and ""
    ]

    response = harness.predict(rows)

    predictions = response.get_json()["predictions"]
    assert [p["key"] for p in predictions] == ["a-1", "b-7"]
    assert positive(response) == pytest.approx(
        [expected_positive(30, "paris"), expected_positive(float("nan"), "")], abs=1e-6
    )
    assert predictions[0]["classes"] in ("yes", "no")
    assert set(predictions[0]) == {"probabilities", "class_ids", "classes", "key"}


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (
            [{"age": "thirty", "city": "paris", "key": "k"}],
            "instance 0: input 'age' (DT_FLOAT) must be a number",
        ),
        ([{"age": 1, "city": 3, "key": "k"}], "input 'city' (DT_STRING) must be a string"),
        (
            [{"age": 1, "city": "a", "key": "k"}, {"age": 1, "key": "k"}],
            "instance 1: missing input 'city'",
        ),
        ([{"age": 1, "city": "a"}], "instance 0: missing input 'key'"),
        ([{"age": 1, "city": "a", "key": "k", "income": 5}], "unknown field 'income'"),
        ([{"age": True, "city": "a", "key": "k"}], "must be a number (NaN for a missing"),
        ([{"age": None, "city": "a", "key": "k"}], "write a missing value as NaN"),
        ([[1, "a"]], "instance 0 must be a JSON object"),
        ([], '"instances" must be a non-empty list'),
    ],
)
def test_bad_input_is_a_400_that_names_the_field(
    harness: Harness, instances: Any, message: str
) -> None:
    response = harness.predict(instances)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert message in error
    assert "send null" not in error


def test_not_json_and_unknown_models_are_answered_like_tf_serving(harness: Harness) -> None:
    bad = harness.client.post("/v1/models/credit:predict", data=b"{nope")
    unknown = harness.predict([{"age": 1, "city": "a", "key": "k"}], "/v1/models/fraud:predict")

    assert bad.status_code == 400
    assert "not valid JSON" in bad.get_json()["error"]
    assert unknown.status_code == 404
    assert "fraud" in unknown.get_json()["error"]


def test_vertex_route_answers_with_the_deployed_model_and_google_errors(harness: Harness) -> None:
    path = "/v1/projects/p/locations/europe-west4/endpoints/credit:predict"

    ok = harness.predict([{"age": 10, "city": "nice", "key": "k"}], path).get_json()
    bad = harness.predict([{"age": "x", "city": "nice", "key": "k"}], path)

    assert ok["deployedModelId"] == "1"
    assert ok["modelVersionId"] == "1"
    assert ok["model"] == "projects/p/locations/europe-west4/models/credit"
    assert bad.status_code == 400
    assert bad.get_json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "'age'" in bad.get_json()["error"]["message"]


def test_status_and_metadata_follow_tf_serving(harness: Harness) -> None:
    status = harness.client.get("/v1/models/credit").get_json()
    missing = harness.client.get("/v1/models/credit/versions/9")
    metadata = harness.client.get("/v1/models/credit/versions/1/metadata").get_json()

    assert status == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert missing.status_code == 404
    inputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {name: spec["dtype"] for name, spec in inputs.items()} == {
        "age": "DT_FLOAT",
        "city": "DT_STRING",
        "key": "DT_STRING",
    }


def test_traffic_is_split_by_serving_json(harness: Harness, model_dirs: dict[str, Path]) -> None:
    harness.publish(serving(model_dirs, {"1": 80, "2": 20}))
    v2 = expected_positive(100, "paris", WEIGHTS["2"])

    answers = [
        positive(harness.predict([{"age": 100, "city": "paris", "key": "k"}]))[0]
        for _ in range(600)
    ]

    share_v2 = sum(abs(a - v2) < 1e-6 for a in answers) / len(answers)
    assert 0.13 < share_v2 < 0.27
    pinned = harness.predict(
        [{"age": 100, "city": "paris", "key": "k"}], "/v1/models/credit/versions/2:predict"
    )
    assert positive(pinned) == pytest.approx([v2], abs=1e-6)


def test_a_new_version_is_swapped_in_under_load_without_a_failed_request(
    harness: Harness, model_dirs: dict[str, Path]
) -> None:
    outcomes: list[tuple[int, float]] = []
    stop = threading.Event()

    def client() -> None:
        app_client = Client(create_app(harness.server))
        while not stop.is_set():
            response = app_client.post(
                "/v1/models/credit:predict",
                json={"instances": [{"age": 100, "city": "paris", "key": "k"}]},
            )
            body = response.get_json()
            outcomes.append(
                (
                    response.status_code,
                    body["predictions"][0]["probabilities"][1]
                    if response.status_code == 200
                    else -1,
                )
            )

    thread = threading.Thread(target=client)
    thread.start()
    try:
        harness.publish(serving(model_dirs, {"2": 100}, {"1": str(model_dirs["1"])}))
        after_swap = len(outcomes)
        deadline = time.monotonic() + 30
        while len(outcomes) < after_swap + 50 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()

    assert {status for status, _ in outcomes} == {200}
    assert outcomes[-1][1] == pytest.approx(expected_positive(100, "paris", WEIGHTS["2"]), abs=1e-6)


def test_a_version_that_fails_to_load_is_reported_and_takes_no_traffic(
    harness: Harness, model_dirs: dict[str, Path]
) -> None:
    harness.publish(serving(model_dirs, {"1": 50, "3": 50}, {"3": str(model_dirs["broken-dir"])}))

    answers = [
        positive(harness.predict([{"age": 1, "city": "a", "key": "k"}]))[0] for _ in range(40)
    ]
    status = harness.client.get("/v1/models/credit/versions/3").get_json()
    pinned = harness.predict(
        [{"age": 1, "city": "a", "key": "k"}], "/v1/models/credit/versions/3:predict"
    )

    assert answers == pytest.approx([expected_positive(1, "a")] * 40, abs=1e-6)
    assert status["model_version_status"][0]["state"] == "END"
    assert "no such model directory" in status["model_version_status"][0]["status"]["error_message"]
    assert pinned.status_code == 503


def test_a_worker_told_of_a_change_answers_even_before_loading_the_new_version(
    harness: Harness, model_dirs: dict[str, Path]
) -> None:
    harness.store.write_json(
        DatasetPaths("credit").serving,
        serving(model_dirs, {"2": 100}, {"1": str(model_dirs["1"])}),
    )
    harness.server.notify_changed()  # as the reload route does for every worker

    answer = positive(harness.predict([{"age": 100, "city": "paris", "key": "k"}]))

    assert answer == pytest.approx([expected_positive(100, "paris", WEIGHTS["2"])], abs=1e-6)
