"""The model server as Vertex AI runs it: one model (``AIP_STORAGE_URI``), told its run and
mode by the deployer (``CASCADE_SERVING_RUN_ID``, ``CASCADE_SERVING_MODE``).

Vertex AI never tells a container its model version id, so the server reads it from
``serving.json`` (the entry with its run id): not healthy until it has, never answering
under a guessed version, and a static or hybrid model looks up only the answers stored
under that version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.serving_config import ServingMode
from cascade.core.store import ArtifactStore
from cascade.serving import server as server_module
from cascade.serving.app import create_app
from cascade.serving.precomputed import MemoryPrecomputedStore
from cascade.serving.server import ModelServer
from cascade.serving.state import DeployedVersion, ServingState
from cascade.serving.uris import UriReader
from tests.unit.serving.saved_models import expected_positive, export_tiny_model

NOW = datetime(2026, 12, 1, tzinfo=UTC)
WEIGHTS = {"1": 1.0, "2": -3.0}
HEAD: dict[str, Any] = {"age": 30.0, "city": "paris", "key": "head-1"}
TAIL: dict[str, Any] = {"age": 70.0, "city": "lyon", "key": "tail-9"}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {v: export_tiny_model(root / f"v{v}", weight=w) for v, w in WEIGHTS.items()}


def stored(version: str, key: str) -> dict[str, Any]:
    """An answer no model gives, naming the version it was stored under."""
    return {"probabilities": [0.0, 1.0], "class_ids": [1], "classes": f"v{version}", "key": key}


def list_runs(artifacts: MemoryArtifactStore, runs: dict[str, str]) -> None:
    """serving.json as the Vertex AI deployer writes it: version -> run id."""
    state = ServingState(
        dataset="credit",
        target="vertex",
        endpoint="projects/p/locations/l/endpoints/1",
        updated_at=NOW,
        versions=[
            DeployedVersion(
                version=version,
                run_id=run,
                model_uri=f"gs://art/runs/{run}/training/model",
                state="standby",
                deployed_at=NOW,
            )
            for version, run in runs.items()
        ],
    )
    artifacts.write_json(DatasetPaths("credit").serving, state)


class Container:
    """One worker of the serving container, as __main__ builds it on Vertex AI."""

    def __init__(
        self,
        tmp_path: Path,
        model_dir: Path,
        artifacts: MemoryArtifactStore,
        *,
        run_id: str | None,
        mode: ServingMode = "dynamic",
        store: MemoryPrecomputedStore | None = None,
    ) -> None:
        self.artifacts_made = 0

        def make_artifacts() -> ArtifactStore:
            self.artifacts_made += 1
            return artifacts

        self.server = ModelServer(
            artifacts=make_artifacts,
            storage=lambda: UriReader(lambda _: artifacts),
            cache_dir=tmp_path / "cache",
            poll_interval_s=60,
            static_model=("credit", str(model_dir)),
            static_run_id=run_id,
            static_mode=mode,
            precomputed=None if store is None else (lambda: store),
        )
        self.client = Client(create_app(self.server, model_name="credit"))

    def health(self) -> int:
        return int(self.client.get("/health").status_code)

    def predict(self, *instances: dict[str, Any]) -> Any:
        return self.client.post("/predict", data=json.dumps({"instances": list(instances)}))


@pytest.fixture
def artifacts() -> MemoryArtifactStore:
    return MemoryArtifactStore("art")


@pytest.fixture
def store() -> MemoryPrecomputedStore:
    answers = MemoryPrecomputedStore()
    for version in ("1", "2"):  # the same key under both versions: only v2's may answer
        answers.write("credit", version, [("head-1", stored(version, "head-1"))])
    return answers


@pytest.fixture
def started() -> Iterator[list[Container]]:
    containers: list[Container] = []
    yield containers
    for container in containers:
        container.server.stop()


def start(started: list[Container], container: Container) -> Container:
    container.server.start()
    started.append(container)
    return container


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_without_a_run_id_the_model_is_version_1_and_serving_json_is_not_read(
    tmp_path: Path,
    model_dirs: dict[str, Path],
    artifacts: MemoryArtifactStore,
    started: list[Container],
) -> None:
    container = start(started, Container(tmp_path, model_dirs["2"], artifacts, run_id=None))

    body = ok(container.predict(TAIL))

    assert container.health() == 200
    assert (body["model_version"], body["precomputed"]) == ("1", [False])
    assert container.artifacts_made == 0


def test_a_run_id_serves_as_the_version_serving_json_lists_for_that_run(
    tmp_path: Path,
    model_dirs: dict[str, Path],
    artifacts: MemoryArtifactStore,
    started: list[Container],
) -> None:
    list_runs(artifacts, {"1": "credit-aaa", "2": "credit-bbb"})
    container = start(started, Container(tmp_path, model_dirs["2"], artifacts, run_id="credit-bbb"))

    body = ok(container.predict(TAIL))

    assert container.health() == 200
    assert (body["model_version"], body["precomputed"]) == ("2", [False])
    assert body["predictions"][0]["probabilities"][1] == pytest.approx(
        expected_positive(TAIL["age"], TAIL["city"], WEIGHTS["2"]), abs=1e-6
    )


def test_the_server_is_not_healthy_until_serving_json_lists_its_run(
    tmp_path: Path,
    model_dirs: dict[str, Path],
    artifacts: MemoryArtifactStore,
    started: list[Container],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    list_runs(artifacts, {"1": "credit-aaa"})
    container = start(started, Container(tmp_path, model_dirs["2"], artifacts, run_id="credit-bbb"))

    assert container.health() == 503
    assert container.predict(TAIL).status_code != 200  # never under a guessed version

    list_runs(artifacts, {"1": "credit-aaa", "2": "credit-bbb"})
    monkeypatch.setattr(server_module, "STATIC_RETRY_S", 0.0)
    container.server.sync()

    assert container.health() == 200
    assert ok(container.predict(TAIL))["model_version"] == "2"


def test_an_unreadable_serving_json_keeps_the_server_unhealthy_and_retrying(
    tmp_path: Path,
    model_dirs: dict[str, Path],
    artifacts: MemoryArtifactStore,
    started: list[Container],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden(name: str, model: type[Any]) -> Any:
        raise PermissionError(f"403 reading {name}")

    monkeypatch.setattr(artifacts, "read_model", forbidden)
    container = start(started, Container(tmp_path, model_dirs["2"], artifacts, run_id="credit-bbb"))

    assert container.health() == 503

    monkeypatch.undo()  # the grant arrives
    list_runs(artifacts, {"2": "credit-bbb"})
    monkeypatch.setattr(server_module, "STATIC_RETRY_S", 0.0)
    container.server.sync()

    assert container.health() == 200


def test_static_answers_only_from_the_resolved_versions_rows(
    tmp_path: Path,
    model_dirs: dict[str, Path],
    artifacts: MemoryArtifactStore,
    store: MemoryPrecomputedStore,
    started: list[Container],
) -> None:
    list_runs(artifacts, {"1": "credit-aaa", "2": "credit-bbb"})
    container = start(
        started,
        Container(
            tmp_path, model_dirs["2"], artifacts, run_id="credit-bbb", mode="static", store=store
        ),
    )

    body = ok(container.predict(HEAD))
    missing = container.predict(TAIL)

    assert body == {
        "predictions": [stored("2", "head-1")],
        "model_version": "2",
        "precomputed": [True],
    }
    assert {version for _, version, _ in store.reads} == {"2"}
    assert missing.status_code == 404
    assert "tail-9" in missing.get_json()["error"]


def test_hybrid_answers_the_head_from_its_versions_rows_and_the_tail_from_the_model(
    tmp_path: Path,
    model_dirs: dict[str, Path],
    artifacts: MemoryArtifactStore,
    store: MemoryPrecomputedStore,
    started: list[Container],
) -> None:
    list_runs(artifacts, {"1": "credit-aaa", "2": "credit-bbb"})
    container = start(
        started,
        Container(
            tmp_path, model_dirs["2"], artifacts, run_id="credit-bbb", mode="hybrid", store=store
        ),
    )

    body = ok(container.predict(HEAD, TAIL))

    assert (body["model_version"], body["precomputed"]) == ("2", [True, False])
    assert body["predictions"][0] == stored("2", "head-1")
    assert body["predictions"][1]["probabilities"][1] == pytest.approx(
        expected_positive(TAIL["age"], TAIL["city"], WEIGHTS["2"]), abs=1e-6
    )


@pytest.mark.parametrize("mode", ["static", "hybrid"])
def test_a_precomputed_mode_without_a_store_is_503_never_the_model(
    tmp_path: Path,
    model_dirs: dict[str, Path],
    artifacts: MemoryArtifactStore,
    started: list[Container],
    mode: ServingMode,
) -> None:
    list_runs(artifacts, {"2": "credit-bbb"})
    container = start(
        started, Container(tmp_path, model_dirs["2"], artifacts, run_id="credit-bbb", mode=mode)
    )

    response = container.predict(HEAD)

    assert response.status_code == 503
    assert "CASCADE_PRECOMPUTED_INSTANCE" in response.get_json()["error"]


def test_a_precomputed_mode_without_a_run_id_is_refused(tmp_path: Path) -> None:
    artifacts = MemoryArtifactStore("art")
    with pytest.raises(ValueError, match="static_run_id"):
        ModelServer(
            artifacts=lambda: artifacts,
            storage=lambda: UriReader(lambda _: artifacts),
            cache_dir=tmp_path,
            static_model=("credit", "gs://art/m"),
            static_mode="static",
        )
