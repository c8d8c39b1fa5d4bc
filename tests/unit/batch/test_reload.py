"""Reloading precomputed answers from BigQuery after the store lost them, on the real
emulators: a batch writes its answers to the local BigQuery and to the Bigtable emulator,
the emulator restarts (its data is in memory only) or a version is dropped, and the
reload brings back the same answers for the same version; the supervisor does it after
it restarts the emulator, and survives a reload that fails."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import google.cloud.bigquery as bigquery
import pytest

from cascade.batch import reload as reload_module
from cascade.batch import task
from cascade.batch.reload import (
    PREDICTIONS_WAREHOUSE,
    ReloadError,
    predictions_table,
    reload_precomputed,
)
from cascade.batch.scoring import PREDICTIONS_SCHEMA, BatchResult, output_tables, score_source
from cascade.batch.sources import FileSource
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.settings import Settings
from cascade.core.topology import load_topology
from cascade.core.warehouse import insert_rows
from cascade.localcloud import supervisor as supervisor_module
from cascade.localcloud.bigtable_emulator import provision_bigtable
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.supervisor import Supervisor
from cascade.serving.precomputed import BigtableStore, MemoryPrecomputedStore
from cascade.serving.servable import Servable, load_servable
from cascade.serving.state import DeployedVersion, ServingState, VersionState
from tests.bigquery_emulator import REPO_ROOT, bigquery_client, bigquery_local
from tests.fixtures_bigtable import READY_TIMEOUT_S, BigtableEmulator, bigtable, bigtable_emulator
from tests.unit.serving.saved_models import expected_positive, export_tiny_model

__all__ = ["bigquery_client", "bigquery_local", "bigtable", "bigtable_emulator"]  # fixtures

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
KEYS = ["a", "b#1#00#c", "ключ-🔑", "../x", "z"]


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory) -> Servable:
    directory = export_tiny_model(tmp_path_factory.mktemp("m") / "model", weight=2.0)
    return load_servable(directory, version="3", run_id="run-3", model_uri=str(directory))


@pytest.fixture
def settings(bigquery_local: LocalCloudSettings) -> Settings:
    return bigquery_local.runtime_settings()


@pytest.fixture
def artifacts() -> MemoryArtifactStore:
    return MemoryArtifactStore("cascade-artifacts")


@pytest.fixture
def store(bigtable: BigtableEmulator) -> Iterator[BigtableStore]:
    made = BigtableStore(bigtable.project, bigtable.instance, bigtable.table)
    yield made
    made.close()


def _dataset() -> str:
    return f"ds-{uuid.uuid4().hex[:10]}"


def _serve(
    artifacts: MemoryArtifactStore,
    dataset: str,
    mode: str,
    versions: dict[str, VersionState],
    traffic: dict[str, int],
) -> None:
    state = ServingState(
        dataset=dataset,
        target="local",
        endpoint=dataset,
        updated_at=T0,
        versions=[
            DeployedVersion(
                version=version,
                run_id=f"run-{version}",
                model_uri=f"gs://cascade-artifacts/runs/run-{version}/training/model",
                state=state,
                deployed_at=T0,
            )
            for version, state in versions.items()
        ],
        traffic=traffic,
        mode=mode,  # type: ignore[arg-type]
    )
    artifacts.write_json(DatasetPaths(dataset).serving, state)


def _batch(
    client: bigquery.Client,
    settings: Settings,
    artifacts: MemoryArtifactStore,
    servable: Servable,
    dataset: str,
    rows: list[dict[str, Any]],
    *,
    sink: Any,
    at: datetime = T0,
) -> BatchResult:
    """One batch over a fresh landing file (a new source: a new batch id)."""
    landing = MemoryArtifactStore("cascade-landing")
    name = f"batch/{uuid.uuid4().hex}.jsonl"
    landing.write(name, "".join(json.dumps(row) + "\n" for row in rows).encode())
    client.create_dataset(settings.warehouse_dataset(PREDICTIONS_WAREHOUSE), exists_ok=True)
    result = score_source(
        source=FileSource(landing, [name]),
        servable=servable,
        dataset=dataset,
        client=client,
        artifacts=artifacts,
        project=settings.project,
        bq_dataset=settings.warehouse_dataset(PREDICTIONS_WAREHOUSE),
        sink=sink,
        now=lambda: at,
    )
    assert not result.skipped
    return result


def _rows(keys: list[str], age: float = 30.0) -> list[dict[str, Any]]:
    return [{"key": key, "age": age + index, "city": "lyon"} for index, key in enumerate(keys)]


def _restart(emulator: BigtableEmulator) -> None:
    emulator.process.stop()
    emulator.process.start()
    emulator.process.wait_ready(READY_TIMEOUT_S)


# -- the reload --------------------------------------------------------------------------


def test_answers_come_back_for_the_same_version_after_the_emulator_restarts(
    bigquery_client: bigquery.Client,
    settings: Settings,
    artifacts: MemoryArtifactStore,
    servable: Servable,
    bigtable: BigtableEmulator,
) -> None:
    dataset = _dataset()
    _serve(artifacts, dataset, "static", {"3": "serving"}, {"3": 100})
    store = BigtableStore(bigtable.project, bigtable.instance, bigtable.table)
    try:
        result = _batch(
            bigquery_client, settings, artifacts, servable, dataset, _rows(KEYS), sink=store
        )
        assert result.manifest.rows_stored == len(KEYS)
        served = store.read(dataset, "3", KEYS)
        assert set(served) == set(KEYS)
    finally:
        store.close()

    _restart(bigtable)  # memory only: the table and every answer are gone
    provision_bigtable(bigtable.local, port=bigtable.port)
    store = BigtableStore(bigtable.project, bigtable.instance, bigtable.table)
    try:
        assert store.read(dataset, "3", KEYS) == {}

        loaded = reload_precomputed(settings, store, artifacts, bigquery_client)

        assert loaded == {(dataset, "3"): len(KEYS)}
        assert store.read(dataset, "3", KEYS) == served  # the same answers, byte for byte
        assert store.read(dataset, "2", KEYS) == {}  # under that version only
        assert served["a"]["probabilities"][1] == pytest.approx(
            expected_positive(30.0, "lyon", 2.0), rel=1e-5
        )
        assert "key" not in served["a"]  # the sink's shape: the outputs without the key
    finally:
        store.close()


def test_a_dynamic_dataset_gets_nothing(
    bigquery_client: bigquery.Client,
    settings: Settings,
    artifacts: MemoryArtifactStore,
    servable: Servable,
    store: BigtableStore,
) -> None:
    dynamic, hybrid = _dataset(), _dataset()
    for dataset, mode in ((dynamic, "dynamic"), (hybrid, "hybrid")):
        _serve(artifacts, dataset, mode, {"3": "serving"}, {"3": 100})
        _batch(
            bigquery_client,
            settings,
            artifacts,
            servable,
            dataset,
            _rows(KEYS),
            sink=MemoryPrecomputedStore(),
        )

    loaded = reload_precomputed(settings, store, artifacts, bigquery_client)

    assert loaded == {(hybrid, "3"): len(KEYS)}
    assert store.read(dynamic, "3", KEYS) == {}
    assert set(store.read(hybrid, "3", KEYS)) == set(KEYS)


def test_the_newest_answer_of_a_repeated_key_wins_whatever_the_insert_order(
    bigquery_client: bigquery.Client,
    settings: Settings,
    artifacts: MemoryArtifactStore,
    servable: Servable,
    store: BigtableStore,
) -> None:
    dataset = _dataset()
    _serve(artifacts, dataset, "static", {"3": "serving"}, {"3": 100})
    newer = MemoryPrecomputedStore()
    # The newer batch is inserted first: insertion order is not time order.
    _batch(
        bigquery_client,
        settings,
        artifacts,
        servable,
        dataset,
        _rows(["a", "b"], age=80.0),
        sink=newer,
        at=T0 + timedelta(hours=1),
    )
    _batch(
        bigquery_client, settings, artifacts, servable, dataset, _rows(["a", "b", "c"]), sink=None
    )
    assert len(_keys_in(bigquery_client, settings, dataset)) == 5  # both batches' rows

    store.drop_version(dataset, "3")
    loaded = reload_precomputed(settings, store, artifacts, bigquery_client)

    assert loaded == {(dataset, "3"): 3}  # one answer per key
    found = store.read(dataset, "3", ["a", "b", "c"])
    expected_newer = newer.read(dataset, "3", ["a", "b"])
    assert {key: found[key] for key in ("a", "b")} == expected_newer
    assert found["a"]["probabilities"][1] == pytest.approx(
        expected_positive(80.0, "lyon", 2.0), rel=1e-5
    )
    assert found["c"]["probabilities"][1] == pytest.approx(
        expected_positive(32.0, "lyon", 2.0), rel=1e-5
    )


def _keys_in(client: bigquery.Client, settings: Settings, dataset: str) -> list[str]:
    table = predictions_table(settings, dataset, "3")
    return [row["key"] for row in client.query(f"SELECT key FROM `{table}`").result()]


def test_deployed_versions_are_loaded_and_a_version_without_a_table_is_skipped(
    bigquery_client: bigquery.Client,
    settings: Settings,
    artifacts: MemoryArtifactStore,
    servable: Servable,
    store: BigtableStore,
) -> None:
    dataset = _dataset()
    # v3 serves, v2 stands by (no traffic: a rollback target), v1 is retired, v4 is a
    # canary that was never batch-scored (no table).
    for version in ("1", "2"):
        _insert(bigquery_client, settings, dataset, version, [("k", {"v": version})])
    _batch(bigquery_client, settings, artifacts, servable, dataset, _rows(["k"]), sink=None)
    _serve(
        artifacts,
        dataset,
        "hybrid",
        {"1": "retired", "2": "standby", "3": "serving", "4": "canary"},
        {"3": 90, "4": 10},
    )

    loaded = reload_precomputed(settings, store, artifacts, bigquery_client)

    assert loaded == {(dataset, "2"): 1, (dataset, "3"): 1}
    assert store.read(dataset, "2", ["k"]) == {"k": {"v": "2"}}
    assert set(store.read(dataset, "3", ["k"])) == {"k"}
    assert store.read(dataset, "1", ["k"]) == {}
    assert store.read(dataset, "4", ["k"]) == {}


def _insert(
    client: bigquery.Client,
    settings: Settings,
    dataset: str,
    version: str,
    answers: list[tuple[str, Any]],
) -> None:
    name = predictions_table(settings, dataset, version)
    client.create_dataset(settings.warehouse_dataset(PREDICTIONS_WAREHOUSE), exists_ok=True)
    table = client.create_table(bigquery.Table(name, schema=PREDICTIONS_SCHEMA))
    rows = [
        {
            "key": key,
            "model_version": version,
            "predicted_at": T0.isoformat(),
            "batch_id": "b",
            "prediction": json.dumps(prediction),
        }
        for key, prediction in answers
    ]
    insert_rows(client, table, rows)


def test_rows_the_store_cannot_hold_are_skipped_and_the_rest_load(
    bigquery_client: bigquery.Client,
    settings: Settings,
    artifacts: MemoryArtifactStore,
    store: BigtableStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dataset = _dataset()
    _insert(
        bigquery_client,
        settings,
        dataset,
        "3",
        [("ok", {"p": 1}), ("k" * 2000, {"p": 2}), ("list", [1, 2]), ("", {"p": 3})],
    )
    _serve(artifacts, dataset, "static", {"3": "serving"}, {"3": 100})

    with caplog.at_level(logging.WARNING, logger="cascade.batch.reload"):
        loaded = reload_precomputed(settings, store, artifacts, bigquery_client)

    assert loaded == {(dataset, "3"): 1}
    assert store.read(dataset, "3", ["ok", "list"]) == {"ok": {"p": 1}}
    assert "skipped 2 row(s) with a key" in caplog.text
    assert "1 with a prediction that is not a JSON object" in caplog.text


def test_one_version_failing_does_not_stop_the_others(
    bigquery_client: bigquery.Client,
    settings: Settings,
    artifacts: MemoryArtifactStore,
) -> None:
    broken, fine = _dataset(), _dataset()
    for dataset in (broken, fine):
        _insert(bigquery_client, settings, dataset, "1", [("k", {"p": 1})])
        _serve(artifacts, dataset, "static", {"1": "serving"}, {"1": 100})

    class Refusing(MemoryPrecomputedStore):
        def write(self, dataset: str, version: str, rows: Any) -> int:
            if dataset == broken:
                raise RuntimeError("store unreachable")
            return super().write(dataset, version, rows)

    store = Refusing()
    with pytest.raises(ReloadError, match=f"{broken} v1: RuntimeError: store unreachable") as info:
        reload_precomputed(settings, store, artifacts, bigquery_client)

    assert info.value.loaded == {(fine, "1"): 1}
    assert store.read(fine, "1", ["k"]) == {"k": {"p": 1}}


def test_the_table_is_the_one_the_batch_writes(settings: Settings) -> None:
    assert PREDICTIONS_WAREHOUSE == task.PREDICTIONS_WAREHOUSE
    for dataset, version in (("credit-risk", "3"), ("a_b-c", "12")):
        assert (
            predictions_table(settings, dataset, version)
            == output_tables(
                settings.project,
                dataset,
                version,
                bq_dataset=settings.warehouse_dataset(PREDICTIONS_WAREHOUSE),
            )[0]
        )
    with pytest.raises(ValueError, match="digits only"):
        predictions_table(settings, "credit-risk", "3; DROP")


# -- the supervisor ----------------------------------------------------------------------


@pytest.fixture
def supervisor(
    tmp_path: Path,
    bigquery_local: LocalCloudSettings,
    bigtable: BigtableEmulator,
    artifacts: MemoryArtifactStore,
    monkeypatch: pytest.MonkeyPatch,
) -> Supervisor:
    """A supervisor (not started) whose Bigtable emulator is the test's, its BigQuery the
    test's, and its artifacts bucket in memory (no GCS emulator here)."""
    local = LocalCloudSettings(
        state_dir=tmp_path / "state",
        repo_root=REPO_ROOT,
        project=bigquery_local.project,
        bigquery_port=bigquery_local.bigquery_port,
        bigquery_grpc_port=bigquery_local.bigquery_grpc_port,
        bigtable_port=bigtable.port,
        job_service_port=1,
        model_server_port=1,
        vertex_endpoint_port=1,
    )
    local.state_dir.mkdir()
    made = Supervisor(local, load_topology(REPO_ROOT / "infra" / "topology.yaml"))
    made.bigtable = bigtable.process  # restart the test's emulator
    monkeypatch.setattr(supervisor_module, "make_storage_client", lambda settings: None)
    monkeypatch.setattr(supervisor_module, "ArtifactStore", lambda client, bucket: artifacts)
    return made


def test_the_supervisor_reloads_the_answers_after_it_restarts_the_emulator(
    bigquery_client: bigquery.Client,
    artifacts: MemoryArtifactStore,
    servable: Servable,
    bigtable: BigtableEmulator,
    supervisor: Supervisor,
) -> None:
    settings = supervisor.local.runtime_settings()
    dataset = _dataset()
    _serve(artifacts, dataset, "static", {"3": "serving"}, {"3": 100})
    _batch(bigquery_client, settings, artifacts, servable, dataset, _rows(KEYS), sink=None)
    bigtable.process.stop()  # the emulator dies; the monitor would call restart()

    supervisor.restart(supervisor.bigtable)

    assert supervisor.state.components["bigtable-emulator"].status == "running"
    store = BigtableStore(supervisor.local.project, bigtable.instance, bigtable.table)
    try:
        found = store.read(dataset, "3", KEYS)
    finally:
        store.close()
    assert set(found) == set(KEYS)
    assert found["z"]["probabilities"][1] == pytest.approx(
        expected_positive(34.0, "lyon", 2.0), rel=1e-5
    )


def test_a_failing_reload_is_logged_and_the_supervisor_goes_on(
    supervisor: Supervisor,
    bigtable: BigtableEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def failing(*args: Any) -> None:
        calls.append("reload")
        raise RuntimeError("BigQuery is down")

    monkeypatch.setattr(supervisor_module, "reload_precomputed", failing)
    bigtable.process.stop()

    with caplog.at_level(logging.ERROR, logger="cascade.localcloud.supervisor"):
        supervisor.restart(supervisor.bigtable)

    assert calls == ["reload"]
    assert "reloading precomputed answers failed" in caplog.text
    assert "BigQuery is down" in caplog.text
    assert supervisor.state.components["bigtable-emulator"].status == "running"
    assert reload_module.reload_precomputed is not failing  # only the supervisor's name
