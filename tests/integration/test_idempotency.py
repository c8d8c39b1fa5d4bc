"""The same event delivered twice, or twice at once, has one effect."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests

from cascade.cli.sample_data import sample_csv
from cascade.core.messages import TrainRequest
from cascade.core.runs import RunRecord, run_id_for_request
from cascade.core.topology import load_topology
from cascade.localcloud.eventarc import object_finalized_event
from cascade.localcloud.router import function_urls
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration


def _finished(run: RunRecord) -> bool:
    """Settled: these datasets have no pipeline config, so their runs end at transform;
    the monitor, beside transform on the same message, has finished too."""
    if run.state == "running":
        return False
    if run.trigger.kind != "object":
        return True  # a train request's run has no monitor
    monitor = run.steps.get("monitor")
    return monitor is not None and monitor.state != "running"


def _validate_url(local_cloud: LocalCloud) -> str:
    topology = load_topology(local_cloud.local.topology_file)
    return function_urls(local_cloud.local, topology)["validate"]


def _finalize_event_for(local_cloud: LocalCloud, name: str) -> tuple[dict[str, str], bytes]:
    blob = local_cloud.storage_client.bucket(local_cloud.settings.landing_bucket).get_blob(name)
    assert blob is not None
    resource = dict(blob._properties)
    event = object_finalized_event(
        message_id=f"redelivery-{uuid.uuid4().hex}",
        object_resource=resource,
        fallback_time=datetime.now(UTC),
    )
    return {**event.headers, **local_cloud.event_source_auth("validate")}, event.body


def _assert_each_step_ran_once(run: RunRecord) -> None:
    assert {step: record.attempts for step, record in run.steps.items()} == {
        "validate": 1,
        "transform": 1,
        "monitor": 1,  # beside transform, on the same message: once too
    }
    assert run.steps["validate"].state == "succeeded"
    assert run.state == "failed"
    assert "label" in (run.steps["transform"].error or "")  # no pipeline config: no training


def test_redelivered_object_event_has_one_effect(local_cloud: LocalCloud) -> None:
    name = f"ds{uuid.uuid4().hex[:8]}/part-1.csv"
    generation = local_cloud.upload(name, sample_csv(20))
    run_id = local_cloud.run_id_for(name, generation)
    local_cloud.wait_for_run(run_id, _finished)
    headers, body = _finalize_event_for(local_cloud, name)

    second = requests.post(_validate_url(local_cloud), headers=headers, data=body, timeout=30)

    assert second.status_code == 200
    run = local_cloud.wait_for_run(run_id, _finished)
    _assert_each_step_ran_once(run)


def test_concurrent_duplicate_deliveries_have_one_effect(local_cloud: LocalCloud) -> None:
    name = f"ds{uuid.uuid4().hex[:8]}/part-1.csv"
    generation = local_cloud.upload(name, sample_csv(20))
    run_id = local_cloud.run_id_for(name, generation)
    headers, body = _finalize_event_for(local_cloud, name)
    url = _validate_url(local_cloud)

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(
            pool.map(
                lambda _: requests.post(url, headers=headers, data=body, timeout=30).status_code,
                range(4),
            )
        )

    # Losers of the race either see the finished claim (200, no-op) or a live claim
    # (500: retry later); a retry after the winner finished is a no-op.
    assert set(statuses) <= {200, 500}
    run = local_cloud.wait_for_run(run_id, _finished)
    retry = requests.post(url, headers=headers, data=body, timeout=30)
    assert retry.status_code == 200
    _assert_each_step_ran_once(local_cloud.wait_for_run(run_id, _finished))
    assert run.trigger.generation == generation


def test_train_request_published_twice_starts_one_run(local_cloud: LocalCloud) -> None:
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    request = TrainRequest(dataset=dataset, request_id="retrain-1", reason="test")

    local_cloud.publish(request)
    local_cloud.publish(request)

    run_id = run_id_for_request(dataset, "retrain-1")
    run = local_cloud.wait_for_run(run_id, _finished)
    assert {step: record.attempts for step, record in run.steps.items()} == {"train": 1}
    assert run.state == "failed"  # the dataset has no transformed data to train on yet
    assert "no transformed data" in (run.steps["train"].error or "")
    assert run.trigger.kind == "request"
    assert run.trigger.request_id == "retrain-1"
