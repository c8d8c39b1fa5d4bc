"""Serving modes end to end: batch predictions with keys land in the local BigQuery, the
hybrid server answers the head from the precomputed store and the tail from the model,
and a promoted version never answers with the old version's precomputed rows.

One chain (two training jobs): a hybrid dataset's first upload deploys version 1;
``cascade batch-predict`` scores a file of head keys with it (BigQuery rows, and answers
in the Bigtable emulator); a retrain promotes version 2. The model server's request log
(Vertex AI's request-response logging schema, in the local BigQuery) feeds
``cascade serving-plan``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from cascade.cli.main import cli
from cascade.cli.sample_data import sample_csv
from cascade.core.messages import TrainRequest
from cascade.core.runs import run_id_for_request
from cascade.core.warehouse import make_bigquery_client
from cascade.localcloud.control import running_settings
from cascade.serving.request_log import read_key_counts
from tests.e2e.conftest import E2E_PIPELINE, NO_THRESHOLDS, Scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TRAINING_S = 420
HYBRID = "serving:\n  mode: hybrid\n"
HEAD = 30


def instances(rows: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """Sample rows as prediction instances, keyed ``<prefix>-<n>`` (no label)."""
    lines = sample_csv(rows, seed=seed).decode().splitlines()
    header = lines[0].split(",")
    found = []
    for number, line in enumerate(lines[1:]):
        row: dict[str, Any] = dict(zip(header, line.split(","), strict=True))
        row.pop("defaulted")
        for column in ("age", "income", "loan_amount", "term_months", "credit_score"):
            row[column] = float(row[column])
        row["num_late_payments"] = float(row["num_late_payments"])
        row["customer_id"] = f"{prefix}-{number}"
        found.append(row)
    return found


def post(scenario: Scenario, instance: dict[str, Any]) -> requests.Response:
    """One instance to the model server's TF Serving route, as a client sends it."""
    url = scenario.cloud.refresh_state().environment["CASCADE_DEPLOY_MODEL_SERVER_URL"]
    return requests.post(
        f"{url}/v1/models/{scenario.dataset}:predict", json={"instances": [instance]}, timeout=30
    )


def ask(scenario: Scenario, instance: dict[str, Any]) -> dict[str, Any]:
    answer = post(scenario, instance)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def run_cli(scenario: Scenario, *args: str) -> str:
    env = {"CASCADE_LOCAL_STATE_DIR": str(scenario.cloud.local.state_dir)}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_batch_predictions_feed_bigquery_and_the_hybrid_head_and_a_promotion_bypasses_them(
    scenario: Scenario,
) -> None:
    scenario.configure(E2E_PIPELINE + HYBRID)
    first = scenario.wait(scenario.upload(rows=2000, seed=61), timeout=TRAINING_S)
    assert first.state == "succeeded", first.error
    state = scenario.serving()
    assert state is not None
    assert state.mode == "hybrid"
    v1 = state.primary
    assert v1 is not None
    head = instances(HEAD, seed=62, prefix="head")
    [tail] = instances(1, seed=63, prefix="tail")

    # Before any batch: every answer is the model's, of the version the split chose.
    before = ask(scenario, head[0])
    assert (before["model_version"], before["precomputed"]) == (v1.version, [False])

    # Batch prediction of the head keys with version 1.
    name = f"batch/{scenario.dataset}/head.jsonl"
    scenario.cloud.artifacts.write(
        name, "".join(json.dumps(row) + "\n" for row in head).encode(), content_type="text/plain"
    )
    bucket = scenario.cloud.settings.artifacts_bucket
    run_cli(scenario, "batch-predict", scenario.dataset, "--files", f"gs://{bucket}/{name}")

    settings = running_settings(scenario.cloud.local)
    table = (
        f"{settings.project}.{settings.warehouse_dataset('predictions')}."
        f"{scenario.dataset}_v{v1.version}"
    )
    client = make_bigquery_client(settings)
    try:
        rows = list(client.query(f"SELECT key, model_version FROM `{table}`").result())
    finally:
        client.close()
    assert sorted(row["key"] for row in rows) == sorted(row["customer_id"] for row in head)
    assert {row["model_version"] for row in rows} == {v1.version}

    # The head from the store (the same answer the model gave), the tail from the model.
    # A worker that asked the store about head[0] above remembers the miss for 2 s.
    deadline = time.monotonic() + 30
    while not (from_store := ask(scenario, head[0]))["precomputed"][0]:
        assert time.monotonic() < deadline, from_store
        time.sleep(0.2)
    assert (from_store["model_version"], from_store["precomputed"]) == (v1.version, [True])
    assert from_store["predictions"][0]["probabilities"] == pytest.approx(
        before["predictions"][0]["probabilities"], abs=1e-6
    )
    from_model = ask(scenario, tail)
    assert (from_model["model_version"], from_model["precomputed"]) == (v1.version, [False])

    # The request log reaches the advisor: every key asked above is counted.
    deadline = time.monotonic() + 60
    while True:
        counts = read_key_counts_now(scenario, settings)
        if counts.get(head[0]["customer_id"], 0) >= 2 and counts.get("tail-0", 0) >= 1:
            break
        assert time.monotonic() < deadline, f"request log: {counts}"
        time.sleep(0.5)
    plan = json.loads(run_cli(scenario, "serving-plan", scenario.dataset, "--json"))
    assert plan["endpoint"] == scenario.dataset
    assert plan["plan"]["mode"] in ("static", "hybrid", "dynamic")

    # A retrain promotes version 2: no answer comes from version 1's precomputed rows.
    scenario.wait_for_jobs_to_end()
    scenario.configure(NO_THRESHOLDS + HYBRID)
    scenario.publish(TrainRequest(dataset=scenario.dataset, request_id="promote"))
    second = scenario.wait(run_id_for_request(scenario.dataset, "promote"), timeout=TRAINING_S)
    assert second.state == "succeeded", second.error
    after = scenario.serving()
    assert after is not None
    v2 = after.primary
    assert v2 is not None
    assert v2.version != v1.version
    assert after.traffic == {v2.version: 100}
    for instance in head[:5]:
        answer = ask(scenario, instance)
        assert (answer["model_version"], answer["precomputed"]) == (v2.version, [False])


def read_key_counts_now(scenario: Scenario, settings: Any) -> dict[str, int]:
    table = (
        f"{settings.project}.{settings.warehouse_dataset('serving-logs')}.request_response_logging"
    )
    client = make_bigquery_client(settings)
    try:
        now = datetime.now(UTC)
        found = read_key_counts(
            client,
            table,
            endpoint=scenario.dataset,
            start=now - timedelta(hours=1),
            end=now + timedelta(minutes=1),
            key_field="customer_id",
        )
    except Exception:
        return {}
    finally:
        client.close()
    return dict(found.counts)


def test_a_static_datasets_deployed_version_is_scored_by_the_batch_predict_function(
    scenario: Scenario,
) -> None:
    """The deploy step asks batch-predict; the local job service runs the batch as the
    Vertex AI jobs' account; the static server answers every scored key from the store
    and refuses any other key."""
    keys = instances(20, seed=64, prefix="static")
    name = f"batch/{scenario.dataset}/keys.jsonl"
    scenario.cloud.artifacts.write(
        name, "".join(json.dumps(row) + "\n" for row in keys).encode(), content_type="text/plain"
    )
    bucket = scenario.cloud.settings.artifacts_bucket
    scenario.configure(
        E2E_PIPELINE
        + f"serving:\n  mode: static\n  batch_source:\n    files: [gs://{bucket}/{name}]\n"
    )
    run = scenario.wait(scenario.upload(rows=2000, seed=65), timeout=TRAINING_S)
    assert run.state == "succeeded", run.error
    state = scenario.serving()
    assert state is not None
    assert state.mode == "static"
    version = state.primary
    assert version is not None

    deadline = time.monotonic() + TRAINING_S
    for instance in keys:  # each key: 404 until the batch has loaded it, then its answer
        while (found := post(scenario, instance)).status_code == 404:
            assert time.monotonic() < deadline, found.text
            time.sleep(0.5)
        assert found.status_code == 200, found.text
        body = found.json()
        assert (body["model_version"], body["precomputed"]) == (version.version, [True])
    [stranger] = instances(1, seed=66, prefix="stranger")
    refused = post(scenario, stranger)
    assert refused.status_code == 404
    assert "stranger-0" in refused.json()["error"]
