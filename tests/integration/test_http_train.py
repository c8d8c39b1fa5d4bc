"""The train function's HTTP entry point (IAM-authenticated in the cloud), over real HTTP.

The hostile bodies are covered in depth by tests/unit/test_http_surfaces.py; here the
deployed shape (functions-framework behind Cloud Run's invoker check, on its local
port) answers the same, to an invoker's ID token only.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from cascade.core.runs import run_id_for_object, run_id_for_request
from cascade.core.topology import load_topology
from cascade.localcloud.id_tokens import bearer_header
from cascade.localcloud.router import function_urls
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration


def _url(local_cloud: LocalCloud) -> str:
    return function_urls(local_cloud.local, load_topology(local_cloud.local.topology_file))[
        "train-http"
    ]


def _known_dataset(local_cloud: LocalCloud) -> str:
    """A dataset with a pipeline config and nothing transformed yet."""
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    local_cloud.push_sample_config(dataset)
    return dataset


def test_post_starts_one_run_per_request_id(local_cloud: LocalCloud) -> None:
    dataset = _known_dataset(local_cloud)
    body = {"dataset": dataset, "request_id": "nightly-2026-11-27", "reason": "test"}
    run_id = run_id_for_request(dataset, "nightly-2026-11-27")

    first = local_cloud.call_http_function("train-http", json=body, timeout=30)
    second = local_cloud.call_http_function("train-http", json=body, timeout=30)

    assert first.status_code == 200, first.text
    assert first.json()["run_id"] == run_id
    assert first.json()["status"] == "failed"  # recorded on the run: no transformed data yet
    assert "no transformed data" in first.json()["error"]
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert second.json()["run_id"] == run_id
    run = local_cloud.wait_for_run(run_id)
    assert run.steps["train"].attempts == 1
    assert "no transformed data" in (run.steps["train"].error or "")


def test_an_unknown_dataset_is_a_404_naming_it(local_cloud: LocalCloud) -> None:
    dataset = f"nosuch{uuid.uuid4().hex[:8]}"

    response = local_cloud.call_http_function("train-http", json={"dataset": dataset}, timeout=30)

    assert response.status_code == 404
    assert dataset in response.json()["error"]


def test_a_run_id_in_the_body_is_refused(local_cloud: LocalCloud) -> None:
    dataset = _known_dataset(local_cloud)
    forged = run_id_for_object(dataset, "landing", f"{dataset}/a.csv", 1)

    for run_id in (forged, "../../../../../tmp/cascade-escape"):
        body = {"dataset": dataset, "request_id": "h1", "run_id": run_id}
        response = local_cloud.call_http_function("train-http", json=body, timeout=30)

        assert response.status_code == 400
        assert response.json()["field"] == "run_id"
    assert local_cloud.ledger.get(forged) is None
    assert local_cloud.ledger.get(run_id_for_request(dataset, "h1")) is None


def test_hostile_bodies_get_json_4xx(local_cloud: LocalCloud) -> None:
    deep = b'{"dataset": "credit", "reason": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    json_type = {"Content-Type": "application/json"}
    cases = [
        (deep, json_type, 400),
        (b"{not json", json_type, 400),
        (b"[]", json_type, 400),
        (b'{"dataset": "credit"}', {"Content-Type": "text/plain"}, 415),
        (b'{"reason": "' + b"x" * (5 * 1024 * 1024) + b'"}', json_type, 413),
    ]

    for body, headers, status in cases:
        response = local_cloud.call_http_function(
            "train-http", data=body, headers=headers, timeout=30
        )

        assert response.status_code == status, response.text[:300]
        assert response.json()["error"]


def test_invalid_request_gets_400_naming_the_field(local_cloud: LocalCloud) -> None:
    response = local_cloud.call_http_function(
        "train-http", json={"dataset": "Bad Name!"}, timeout=30
    )

    assert response.status_code == 400
    assert "dataset" in response.json()["error"]


def test_get_is_not_allowed(local_cloud: LocalCloud) -> None:
    token = bearer_header(local_cloud.local.id_token_key_file, _url(local_cloud))
    assert requests.get(_url(local_cloud), headers=token, timeout=30).status_code == 405


def test_only_an_invoker_s_id_token_for_this_function_reaches_it(
    local_cloud: LocalCloud, tmp_path: Path
) -> None:
    """Cloud Run's check in front of the function: no token 403, a token that does not
    verify 401, a verified token of someone outside the invoker group 403; none of them
    starts a run."""
    dataset = _known_dataset(local_cloud)
    body = {"dataset": dataset, "request_id": "guarded", "reason": "test"}
    url, key = _url(local_cloud), local_cloud.local.id_token_key_file
    evaluate_http = local_cloud.function_url("evaluate-http")
    refused = {
        "no token": (requests.post(url, json=body, timeout=30), 403),
        "not a bearer": (
            requests.post(url, json=body, headers={"Authorization": "Basic b3A6b3A="}, timeout=30),
            403,
        ),
        "another function's": (
            requests.post(url, json=body, headers=bearer_header(key, evaluate_http), timeout=30),
            401,
        ),
        "another issuer's": (
            requests.post(
                url, json=body, headers=bearer_header(tmp_path / "k.pem", url), timeout=30
            ),
            401,
        ),
        "a stranger's": (
            local_cloud.call_http_function("train-http", email="mallory@example.com", json=body),
            403,
        ),
    }

    for case, (response, status) in refused.items():
        assert response.status_code == status, (case, response.text)
    assert "mallory@example.com may not invoke train-http" in refused["a stranger's"][0].text
    assert local_cloud.ledger.get(run_id_for_request(dataset, "guarded")) is None
    allowed = local_cloud.call_http_function("train-http", json=body)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["run_id"] == run_id_for_request(dataset, "guarded")
