"""A dataset's stored serving plan (``models/<dataset>/serving-plan.json``): saved and
loaded back, computed from the request log in the local BigQuery (the dataset's
endpoint and key column), ``cascade serving-plan --save``, and ``cascade report``
refreshing it for a deployed dataset."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import google.cloud.bigquery as bigquery
import pytest
from click.testing import CliRunner
from google.api_core import exceptions as gexc
from pydantic import ValidationError

from cascade.cli import report as cli_report
from cascade.cli import serving_plan as cli_plan
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.settings import Settings
from cascade.core.warehouse import make_bigquery_client
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.processes import free_loopback_port
from cascade.localcloud.state_file import CloudState
from cascade.report.serving_plan import (
    StoredServingPlan,
    load_serving_plan,
    save_serving_plan,
    serving_plan_path,
)
from cascade.report.serving_plan_compute import (
    NoServingPlanError,
    compute_serving_plan,
    request_log_table,
)
from cascade.serving.plan import advise
from cascade.serving.request_log import ensure_request_log_table, request_log_row
from cascade.serving.state import DeployedVersion, ServingState
from tests.bigquery_emulator import bigquery_client, bigquery_local  # noqa: F401
from tests.unit.report.builders import RUN_ID, LocalCloudStandIn, full_run

DATASET = "credit"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ODD_KEYS = ['<script>alert("x")</script>', "new\nline", "ünï©ødé 🙂"]


def _stored(**fields: Any) -> StoredServingPlan:
    values: dict[str, Any] = {
        "dataset": DATASET,
        "endpoint": "projects/1/locations/us-central1/endpoints/42",
        "table": "p.d.request_response_logging",
        "key_field": "user",
        "start": NOW - timedelta(days=7),
        "end": NOW,
        "computed_at": NOW,
        "unkeyed": 2,
        "plan": advise({key: index + 1 for index, key in enumerate(ODD_KEYS)}, window_s=60.0),
    }
    return StoredServingPlan.model_validate(values | fields)


# -- saved and loaded -----------------------------------------------------------------------


def test_a_saved_plan_loads_back_equal_from_beside_the_serving_state() -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    stored = _stored()

    uri = save_serving_plan(artifacts, stored)

    assert serving_plan_path(DATASET) == "models/credit/serving-plan.json"
    assert uri == "gs://cascade-artifacts/models/credit/serving-plan.json"
    kept = artifacts.objects["models/credit/serving-plan.json"]
    assert kept.content_type == "application/json"
    body = json.loads(kept.data)
    assert body["plan"]["mode"] == "static"
    assert body["endpoint"] == stored.endpoint
    loaded = load_serving_plan(artifacts, DATASET)
    assert loaded == stored
    assert loaded is not None
    assert loaded.plan == stored.plan  # the dataclasses, tuples and assumptions back
    assert loaded.plan.top_keys == stored.plan.top_keys
    assert loaded.plan.cost("static") == stored.plan.cost("static")


def test_no_plan_is_none_a_corrupt_one_an_error_and_a_bad_dataset_name_is_refused() -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    assert load_serving_plan(artifacts, DATASET) is None
    artifacts.write(serving_plan_path(DATASET), b'{"dataset": "credit"}')
    with pytest.raises(ValidationError):
        load_serving_plan(artifacts, DATASET)
    for name in ("../credit", "<script>", "Credit/x"):
        with pytest.raises(BadRequestError):
            serving_plan_path(name)
    with pytest.raises(BadRequestError):
        save_serving_plan(artifacts, _stored(dataset="../../runs/x"))
    assert [name for name in artifacts.objects if "runs" in name] == []


def test_a_stored_plan_refuses_what_the_advisor_would_not_answer() -> None:
    body = json.loads(_stored().model_dump_json())
    body["plan"]["mode"] = "<b>fast</b>"
    with pytest.raises(ValidationError, match=r"plan\.mode"):
        StoredServingPlan.model_validate(body)
    body = json.loads(_stored().model_dump_json())
    body["plan"]["assumptions"]["peaked_share"] = 7
    with pytest.raises(ValidationError, match="peaked_share"):
        StoredServingPlan.model_validate(body)


# -- computed from the local BigQuery -------------------------------------------------------


def _log(client: bigquery.Client, table: str, endpoint: str, keys: list[Any], **row: Any) -> None:
    """One logged request per key, now (each under ``key_field``, default ``key``)."""
    ensure_request_log_table(client, table)
    rows = [
        request_log_row(
            endpoint=endpoint, deployed_model_id="1", request_id=number, keys=[key], **row
        )
        for number, key in enumerate(keys)
    ]
    assert client.insert_rows_json(table, rows) == []


def _table(client: bigquery.Client, name: str) -> str:
    return f"{client.project}.cascade_plans.{name}"


def _deployed(artifacts: MemoryArtifactStore, endpoint: str) -> None:
    state = ServingState(
        dataset=DATASET,
        target="vertex",
        endpoint=endpoint,
        versions=[
            DeployedVersion(
                version="1",
                run_id="credit-deployed",
                model_uri="gs://m/1",
                state="serving",
                deployed_at=NOW,
            )
        ],
        traffic={"1": 100},
        updated_at=NOW,
    )
    artifacts.write_json(DatasetPaths(DATASET).serving, state)


def _client_of(client: bigquery.Client) -> Callable[[], bigquery.Client]:
    return lambda: client


def test_a_plan_counts_the_datasets_endpoint_by_its_key_column(
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    artifacts.write(
        DatasetPaths(DATASET).pipeline_config,
        b"label: defaulted\nproblem_type: binary\ntransform:\n  key_column: user\n",
    )
    _deployed(artifacts, "endpoints/42")
    table = _table(bigquery_client, "counted")
    _log(
        bigquery_client, table, "endpoints/42", ["a", "a", "a", "b", ODD_KEYS[0]], key_field="user"
    )
    _log(bigquery_client, table, "endpoints/42", ["c"], key_field="key")  # not the key column
    _log(bigquery_client, table, "endpoints/7", ["z"] * 9, key_field="user")  # another endpoint
    now = datetime.now(UTC)

    stored = compute_serving_plan(
        artifacts,
        DATASET,
        bigquery_client=_client_of(bigquery_client),
        table=table,
        window=timedelta(hours=1),
        clock=lambda: now + timedelta(minutes=1),
    )

    assert (stored.dataset, stored.endpoint, stored.key_field) == (DATASET, "endpoints/42", "user")
    assert stored.table == table
    assert (stored.start, stored.end) == (now - timedelta(minutes=59), now + timedelta(minutes=1))
    assert stored.computed_at == now + timedelta(minutes=1)
    assert stored.unkeyed == 1
    assert stored.plan.requests == 5
    assert dict(stored.plan.top_keys) == {"a": 3, "b": 1, ODD_KEYS[0]: 1}
    assert stored.plan.requests_per_s == pytest.approx(5 / 3600)


def test_no_plan_says_why(bigquery_client: bigquery.Client) -> None:  # noqa: F811
    artifacts = MemoryArtifactStore("cascade-artifacts")
    missing = _table(bigquery_client, "never_logged")
    with pytest.raises(NoServingPlanError, match=f"no request log yet: table {missing} does not"):
        compute_serving_plan(
            artifacts, DATASET, bigquery_client=_client_of(bigquery_client), table=missing
        )
    table = _table(bigquery_client, "other_traffic")
    _log(bigquery_client, table, "elsewhere", ["a"])
    with pytest.raises(
        NoServingPlanError,
        match=r"no keyed requests for endpoint 'credit' in .* over the last 3d \(0 instances",
    ):
        compute_serving_plan(
            artifacts,
            DATASET,
            bigquery_client=_client_of(bigquery_client),
            table=table,
            window=timedelta(days=3),
            window_label="3d",
        )
    with pytest.raises(NoServingPlanError, match=r"not project\.dataset\.table"):
        compute_serving_plan(
            artifacts, DATASET, bigquery_client=_client_of(bigquery_client), table="x`; --"
        )


def test_an_unreachable_bigquery_fails_within_the_deadline() -> None:
    settings = Settings(
        project="cascade-local", bigquery_emulator_host=f"http://127.0.0.1:{free_loopback_port()}"
    )
    started = time.monotonic()
    with pytest.raises(gexc.RetryError):
        compute_serving_plan(
            MemoryArtifactStore("cascade-artifacts"),
            DATASET,
            bigquery_client=lambda: make_bigquery_client(settings),
            table="cascade-local.d.t",
            deadline_s=1.0,
        )
    assert time.monotonic() - started < 15  # without a deadline: 10 minutes of retries


# -- cascade serving-plan --save ------------------------------------------------------------


@pytest.fixture
def cli_store(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> MemoryArtifactStore:
    """The command's settings point at the local BigQuery, its bucket is in memory."""
    store = MemoryArtifactStore("cascade-artifacts")
    settings = bigquery_local.runtime_settings()
    monkeypatch.setattr(cli_plan, "_settings", lambda from_env: settings)
    monkeypatch.setattr(cli_plan, "make_storage_client", lambda settings: None)
    monkeypatch.setattr(cli_plan, "ArtifactStore", lambda client, bucket: store)
    return store


def test_serving_plan_save_stores_the_plan_and_says_where(
    cli_store: MemoryArtifactStore,
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    table = _table(bigquery_client, "saved")
    _log(bigquery_client, table, DATASET, ["a", "a", "b"])

    shown = CliRunner().invoke(cli_plan.serving_plan, [DATASET, "--table", table])
    assert shown.exit_code == 0, shown.output
    assert serving_plan_path(DATASET) not in cli_store.objects  # only --save stores
    result = CliRunner().invoke(cli_plan.serving_plan, [DATASET, "--table", table, "--save"])

    assert result.exit_code == 0, result.output
    assert "credit: recommended static" in result.output
    assert "saved: gs://cascade-artifacts/models/credit/serving-plan.json" in result.output
    stored = load_serving_plan(cli_store, DATASET)
    assert stored is not None
    assert (stored.endpoint, stored.table, stored.key_field) == (DATASET, table, "key")
    assert stored.end - stored.start == timedelta(days=7)
    assert dict(stored.plan.top_keys) == {"a": 2, "b": 1}


def test_serving_plan_json_save_keeps_stdout_one_json_document(
    cli_store: MemoryArtifactStore,
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    table = _table(bigquery_client, "saved_json")
    _log(bigquery_client, table, DATASET, ["a", "b", "c"])

    result = CliRunner().invoke(
        cli_plan.serving_plan, [DATASET, "--table", table, "--json", "--save", "--since", "1h"]
    )

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["plan"]["requests"] == 3
    assert result.stderr.strip() == (
        "saved: gs://cascade-artifacts/models/credit/serving-plan.json (the run report shows it)"
    )
    stored = load_serving_plan(cli_store, DATASET)
    assert stored is not None
    assert stored.start.isoformat() == body["start"]
    assert json.loads(json.dumps(stored.plan.as_dict())) == body["plan"]


def test_serving_plan_without_a_log_fails_with_its_message_and_saves_nothing(
    cli_store: MemoryArtifactStore,
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    table = _table(bigquery_client, "absent")

    result = CliRunner().invoke(cli_plan.serving_plan, [DATASET, "--table", table, "--save"])

    assert result.exit_code == 1
    assert f"no request log yet: table {table} does not exist" in " ".join(result.output.split())
    assert serving_plan_path(DATASET) not in cli_store.objects


# -- cascade report refreshes it ------------------------------------------------------------


def test_report_refreshes_and_shows_the_plan_of_a_deployed_dataset(
    step_context: StepContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bigquery_local: LocalCloudSettings,  # noqa: F811
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    full_run(step_context, tmp_path)
    store = step_context.artifacts
    assert isinstance(store, MemoryArtifactStore)
    settings = bigquery_local.runtime_settings()
    _log(bigquery_client, request_log_table(settings), DATASET, ["a", "a", "a", "b"])
    running = CloudState.model_construct()
    monkeypatch.setattr(cli_report.control, "status", lambda local: running)
    monkeypatch.setattr(cli_report.control, "running_settings", lambda local: settings)
    monkeypatch.setattr(cli_report, "LocalCloudClient", LocalCloudStandIn(store))
    out = tmp_path / "run.html"

    result = CliRunner().invoke(cli_report.report, [RUN_ID, "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "serving plan: gs://cascade-artifacts/models/credit/serving-plan.json (recommended static)"
    )
    stored = load_serving_plan(store, DATASET)
    assert stored is not None
    assert dict(stored.plan.top_keys) == {"a": 3, "b": 1}
    html = out.read_text(encoding="utf-8")
    section = html[html.index('<section id="serving-plan">') :]
    assert "Recommended: <strong>static</strong>" in section
    assert "No fresh serving plan" not in section
    assert "<polyline" in section
