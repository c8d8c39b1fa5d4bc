"""Static, dynamic and hybrid serving: the model server over a precomputed store.

The version is chosen first (the traffic split, or the route's version) and only that
version's precomputed answers are served; every answer says which version answered and,
per instance, whether it was precomputed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.cloud import aiplatform_v1
from google.protobuf import json_format
from werkzeug.test import Client

from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.pipeline_config import push_pipeline_config
from cascade.core.serving_config import ServingMode
from cascade.serving.app import create_app
from cascade.serving.precomputed import MemoryPrecomputedStore
from cascade.serving.server import ModelServer
from cascade.serving.state import (
    DeployedVersion,
    ServingState,
    read_serving_state,
    record_serving_mode,
)
from cascade.serving.uris import UriReader
from cascade.steps.deploy import handle_model_blessed
from tests.unit.deploy.fakes import FakeDeployer
from tests.unit.deploy.test_deploy_step import BLESSED, evaluation
from tests.unit.evaluation.builders import DATASET, start_run
from tests.unit.serving.saved_models import expected_positive, export_tiny_model

NOW = datetime(2026, 11, 30, tzinfo=UTC)
WEIGHTS = {"1": 1.0, "2": -3.0}
HEAD = {"age": 30.0, "city": "paris", "key": "head-1"}
TAIL = {"age": 70.0, "city": "lyon", "key": "tail-9"}


def stored(version: str, key: str) -> dict[str, Any]:
    """A precomputed answer no model would give: tells store answers from model answers
    and one version's answers from another's."""
    return {
        "probabilities": [0.0, 1.0],
        "class_ids": [1],
        "classes": f"stored-v{version}",
        "key": key,
    }


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {v: export_tiny_model(root / f"v{v}", weight=w) for v, w in WEIGHTS.items()}


class Harness:
    def __init__(
        self,
        artifacts: MemoryArtifactStore,
        server: ModelServer,
        store: MemoryPrecomputedStore | None,
        model_dirs: dict[str, Path],
    ) -> None:
        self.artifacts = artifacts
        self.server = server
        self.store = store
        self.model_dirs = model_dirs
        self.client = Client(create_app(server))

    def publish(self, mode: ServingMode, split: dict[str, int]) -> None:
        state = ServingState(
            dataset="credit",
            target="local",
            endpoint="credit",
            updated_at=NOW,
            mode=mode,
            versions=[
                DeployedVersion(
                    version=v,
                    run_id=f"run-{v}",
                    deployed_at=NOW,
                    model_uri=str(self.model_dirs[v]),
                    state="serving",
                )
                for v in sorted(split)
            ],
            traffic=split,
        )
        self.artifacts.write_json(DatasetPaths("credit").serving, state)
        self.server.sync()

    def predict(self, instances: Any, path: str = "/v1/models/credit:predict") -> Any:
        return self.client.post(path, data=json.dumps({"instances": instances}))


def _harness(
    tmp_path: Path, model_dirs: dict[str, Path], store: MemoryPrecomputedStore | None
) -> Iterator[Harness]:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    server = ModelServer(
        artifacts=lambda: artifacts,
        storage=lambda: UriReader(lambda _: artifacts),
        cache_dir=tmp_path / "cache",
        poll_interval_s=60,
        precomputed=None if store is None else (lambda: store),
    )
    harness = Harness(artifacts, server, store, model_dirs)
    harness.publish("dynamic", {"1": 100})
    server.start()
    yield harness
    server.stop()


@pytest.fixture
def harness(tmp_path: Path, model_dirs: dict[str, Path]) -> Iterator[Harness]:
    store = MemoryPrecomputedStore()
    store.write("credit", "1", [("head-1", stored("1", "head-1"))])
    store.write("credit", "2", [("head-2", stored("2", "head-2"))])
    yield from _harness(tmp_path, model_dirs, store)


@pytest.fixture
def storeless(tmp_path: Path, model_dirs: dict[str, Path]) -> Iterator[Harness]:
    yield from _harness(tmp_path, model_dirs, None)


def model_positive(row: dict[str, Any], version: str = "1") -> float:
    return expected_positive(row["age"], row["city"], WEIGHTS[version])


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_dynamic_answers_from_the_model_and_says_so(harness: Harness) -> None:
    body = ok(harness.predict([HEAD, TAIL]))

    assert body["model_version"] == "1"
    assert body["precomputed"] == [False, False]
    positives = [p["probabilities"][1] for p in body["predictions"]]
    assert positives == pytest.approx([model_positive(HEAD), model_positive(TAIL)], abs=1e-6)
    assert harness.store is not None
    assert harness.store.reads == []


def test_hybrid_answers_the_head_from_the_store_and_the_tail_from_the_model(
    harness: Harness,
) -> None:
    harness.publish("hybrid", {"1": 100})

    body = ok(harness.predict([TAIL, HEAD, TAIL]))

    assert body["model_version"] == "1"
    assert body["precomputed"] == [False, True, False]
    tail, head, tail_again = body["predictions"]
    assert head == stored("1", "head-1")
    assert tail["key"] == "tail-9"
    assert tail_again == tail
    assert tail["probabilities"][1] == pytest.approx(model_positive(TAIL), abs=1e-6)
    assert set(tail) == set(head)  # the same response shape whichever answered


def test_static_answers_a_known_key_from_the_store(harness: Harness) -> None:
    harness.publish("static", {"1": 100})

    body = ok(harness.predict([HEAD]))

    assert body == {
        "predictions": [stored("1", "head-1")],
        "model_version": "1",
        "precomputed": [True],
    }


def test_static_answers_an_unknown_key_404_naming_it(harness: Harness) -> None:
    harness.publish("static", {"1": 100})

    response = harness.predict([HEAD, TAIL, {**TAIL, "key": "other"}])

    assert response.status_code == 404
    error = response.get_json()["error"]
    assert "no precomputed answer for key 'tail-9' (and 1 more)" in error
    assert "version 1 is served static" in error


@pytest.mark.parametrize("mode", ["static", "hybrid"])
def test_the_models_answers_are_asked_for_in_any_mode(harness: Harness, mode: str) -> None:
    """The deployer's smoke and canary checks and continued evaluation judge the model,
    not the store: they ask for the model's answers, known keys or not."""
    harness.publish(mode, {"1": 100})
    body = {"instances": [HEAD, TAIL], "parameters": {"answer_from": "model"}}

    answer = ok(harness.client.post("/v1/models/credit:predict", data=json.dumps(body)))

    assert answer["precomputed"] == [False, False]
    positives = [p["probabilities"][1] for p in answer["predictions"]]
    assert positives == pytest.approx([model_positive(HEAD), model_positive(TAIL)], abs=1e-6)


@pytest.mark.parametrize("value", ["store", "", None, True, ["model"], {"model": 1}])
def test_any_other_answer_source_is_refused_naming_the_field(harness: Harness, value: Any) -> None:
    harness.publish("static", {"1": 100})
    body = {"instances": [HEAD], "parameters": {"answer_from": value}}

    response = harness.client.post("/v1/models/credit:predict", data=json.dumps(body))

    assert response.status_code == 400
    assert "parameters.answer_from" in response.get_json()["error"]


def test_static_still_applies_the_request_rules(harness: Harness) -> None:
    harness.publish("static", {"1": 100})

    response = harness.predict([{"age": 30.0, "key": "head-1"}])

    assert response.status_code == 400
    assert "missing input 'city'" in response.get_json()["error"]


def test_after_a_promotion_no_answer_comes_from_the_old_versions_rows(harness: Harness) -> None:
    harness.publish("hybrid", {"2": 100})

    body = ok(harness.predict([HEAD]))

    assert body["model_version"] == "2"
    assert body["precomputed"] == [False]  # v1 has head-1, v2 does not: the model answers
    assert body["predictions"][0]["probabilities"][1] == pytest.approx(
        model_positive(HEAD, "2"), abs=1e-6
    )
    assert harness.store is not None
    assert {(dataset, version) for dataset, version, _ in harness.store.reads} == {("credit", "2")}

    harness.publish("static", {"2": 100})
    assert harness.predict([HEAD]).status_code == 404


def test_under_a_split_each_answer_comes_from_the_version_that_was_drawn(
    harness: Harness,
) -> None:
    harness.publish("hybrid", {"1": 50, "2": 50})
    seen: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}

    for _ in range(200):
        body = ok(harness.predict([HEAD, {**HEAD, "key": "head-2"}]))
        seen[body["model_version"]].append(body)
        if len(seen["1"]) > 3 and len(seen["2"]) > 3:
            break

    assert len(seen["1"]) > 3
    assert len(seen["2"]) > 3
    for body in seen["1"]:
        assert body["precomputed"] == [True, False]
        assert body["predictions"][0] == stored("1", "head-1")
    for body in seen["2"]:
        assert body["precomputed"] == [False, True]
        assert body["predictions"][1] == stored("2", "head-2")


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/credit/versions/2:predict", "2"),
        ("/v1/endpoints/credit/deployedModels/1:predict", "1"),
    ],
)
def test_a_route_naming_a_version_uses_that_versions_answers(
    harness: Harness, path: str, version: str
) -> None:
    harness.publish("hybrid", {"1": 50, "2": 50})

    body = ok(harness.predict([{**HEAD, "key": f"head-{version}"}], path))

    assert body["model_version"] == version
    assert body["precomputed"] == [True]
    assert body["predictions"] == [stored(version, f"head-{version}")]


def test_a_b64_key_is_looked_up_as_its_text(harness: Harness) -> None:
    harness.publish("static", {"1": 100})
    encoded = base64.b64encode(b"head-1").decode()

    body = ok(harness.predict([{**HEAD, "key": {"b64": encoded}}]))

    assert body["precomputed"] == [True]
    assert body["predictions"] == [stored("1", "head-1")]


@pytest.mark.parametrize("key", ["", "k" * 5000, "#", "head-1\x00"])
def test_hostile_request_keys_are_misses_not_errors(harness: Harness, key: str) -> None:
    harness.publish("hybrid", {"1": 100})

    body = ok(harness.predict([{**HEAD, "key": key}]))

    assert body["precomputed"] == [False]
    assert body["predictions"][0]["key"] == key

    harness.publish("static", {"1": 100})
    response = harness.predict([{**HEAD, "key": key}])
    assert response.status_code == 404
    assert "no precomputed answer for key" in response.get_json()["error"]


def test_an_unreachable_store_is_503_for_static_and_the_model_for_hybrid(
    harness: Harness,
) -> None:
    assert harness.store is not None
    harness.store.fail_reads = ConnectionError("bigtable down")
    harness.publish("hybrid", {"1": 100})

    body = ok(harness.predict([HEAD]))
    assert body["precomputed"] == [False]
    assert body["predictions"][0]["probabilities"][1] == pytest.approx(
        model_positive(HEAD), abs=1e-6
    )

    harness.publish("static", {"1": 100})
    response = harness.predict([HEAD])
    assert response.status_code == 503
    assert "precomputed store is unavailable: bigtable down" in response.get_json()["error"]


@pytest.mark.parametrize("mode", ["static", "hybrid"])
def test_without_a_store_static_and_hybrid_are_503_and_dynamic_serves(
    storeless: Harness, mode: ServingMode
) -> None:
    assert ok(storeless.predict([HEAD]))["precomputed"] == [False]

    storeless.publish(mode, {"1": 100})
    response = storeless.predict([HEAD])

    assert response.status_code == 503
    error = response.get_json()["error"]
    assert f"served {mode}" in error
    assert "CASCADE_PRECOMPUTED_INSTANCE" in error


def test_the_vertex_route_stays_a_valid_predict_response(harness: Harness) -> None:
    harness.publish("hybrid", {"1": 100})
    path = "/v1/projects/p/locations/europe-west1/endpoints/credit:predict"

    body = ok(harness.predict([HEAD, TAIL], path))

    response = aiplatform_v1.PredictResponse.pb()()
    json_format.ParseDict(body, response)  # strict: no field Vertex AI does not have
    assert response.model_version_id == "1"
    assert response.deployed_model_id == "1"
    assert body["metadata"] == {"precomputed": [True, False]}
    assert body["predictions"][0] == stored("1", "head-1")


def test_the_container_route_has_the_same_shape(harness: Harness) -> None:
    harness.artifacts.write_json(
        DatasetPaths("model").serving,
        ServingState(
            dataset="model",
            target="local",
            endpoint="model",
            updated_at=NOW,
            mode="hybrid",
            versions=[
                DeployedVersion(
                    version="1",
                    run_id="r",
                    deployed_at=NOW,
                    model_uri=str(harness.model_dirs["1"]),
                    state="serving",
                )
            ],
            traffic={"1": 100},
        ),
    )
    harness.server.sync()
    assert harness.store is not None
    harness.store.write("model", "1", [("head-1", stored("1", "head-1"))])

    body = ok(harness.predict([HEAD, TAIL], "/predict"))

    assert set(body) == {"predictions", "model_version", "precomputed"}
    assert body["precomputed"] == [True, False]


def test_old_serving_json_without_a_mode_is_dynamic(harness: Harness) -> None:
    name = DatasetPaths("credit").serving
    document = json.loads(harness.artifacts.read(name).data)  # type: ignore[union-attr]
    document.pop("mode")
    harness.artifacts.write(name, json.dumps(document).encode())

    found = read_serving_state(harness.artifacts, "credit")

    assert found is not None
    assert found[0].mode == "dynamic"


def test_record_serving_mode_writes_only_a_change(harness: Harness) -> None:
    assert record_serving_mode(harness.artifacts, "credit", "dynamic") is False
    assert record_serving_mode(harness.artifacts, "credit", "hybrid") is True
    assert record_serving_mode(harness.artifacts, "credit", "hybrid") is False
    assert record_serving_mode(harness.artifacts, "never-deployed", "static") is False
    assert harness.artifacts.read(DatasetPaths("never-deployed").serving) is None
    found = read_serving_state(harness.artifacts, "credit")
    assert found is not None
    assert found[0].mode == "hybrid"


@pytest.fixture
def ctx(step_context: StepContext) -> StepContext:
    start_run(step_context.ledger)
    return step_context


def test_the_deploy_step_records_the_datasets_mode(ctx: StepContext) -> None:
    push_pipeline_config(ctx.artifacts, DATASET, b"serving:\n  mode: hybrid\n", where="p.yaml")
    ctx.artifacts.write_json(
        DatasetPaths(DATASET).serving,
        ServingState(dataset=DATASET, target="local", endpoint=DATASET, updated_at=NOW),
    )
    evaluation(ctx, "blessed")
    deployer = FakeDeployer()

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    found = read_serving_state(ctx.artifacts, DATASET)
    assert found is not None
    assert found[0].mode == "hybrid"
    # and the deployer is told it (a Vertex AI container learns its mode with the upload)
    [(name, (candidate, _))] = deployer.calls[:1]
    assert (name, candidate.serving_mode) == ("register", "hybrid")
