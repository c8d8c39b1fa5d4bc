"""The train function's HTTP entry point (IAM-authenticated in the cloud)."""

from __future__ import annotations

import uuid

import pytest
import requests

from cascade.core.runs import run_id_for_request
from cascade.core.topology import load_topology
from cascade.localcloud.router import function_urls
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration


def _url(local_cloud: LocalCloud) -> str:
    return function_urls(local_cloud.local, load_topology(local_cloud.local.topology_file))[
        "train-http"
    ]


def test_post_starts_one_run_per_request_id(local_cloud: LocalCloud) -> None:
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    body = {"dataset": dataset, "request_id": "nightly-2026-11-27", "reason": "test"}

    first = requests.post(_url(local_cloud), json=body, timeout=30)
    second = requests.post(_url(local_cloud), json=body, timeout=30)

    assert first.status_code == 200
    assert first.json()["status"] == "failed"  # recorded on the run: no transformed data yet
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    run = local_cloud.wait_for_run(run_id_for_request(dataset, "nightly-2026-11-27"))
    assert run.steps["train"].attempts == 1
    assert "no transformed data" in (run.steps["train"].error or "")


def test_invalid_request_gets_400_naming_the_field(local_cloud: LocalCloud) -> None:
    response = requests.post(_url(local_cloud), json={"dataset": "Bad Name!"}, timeout=30)

    assert response.status_code == 400
    assert "dataset" in response.json()["error"]


def test_get_is_not_allowed(local_cloud: LocalCloud) -> None:
    assert requests.get(_url(local_cloud), timeout=30).status_code == 405
