"""Events no retry can fix are alerted and acknowledged, never retried into a loop."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from cascade.core.clients import make_subscriber
from cascade.localcloud.pubsub_admin import archive_subscription_id
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration


def _pull_alert(local_cloud: LocalCloud, needle: str, timeout: float = 20) -> dict[str, object]:
    subscriber = make_subscriber(local_cloud.settings)
    subscription = subscriber.subscription_path(
        local_cloud.settings.project, archive_subscription_id(local_cloud.settings, "alerts")
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=50, timeout=5)
        for received in response.received_messages:
            subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
            alert = json.loads(received.message.data)
            if needle in alert["summary"]:
                return dict(alert)
    raise AssertionError(f"no alert mentioning {needle!r}")


def test_object_outside_a_dataset_folder_is_alerted_not_retried(local_cloud: LocalCloud) -> None:
    name = f"stray-{uuid.uuid4().hex[:8]}.csv"

    local_cloud.upload(name, b"a,b\n1,2\n")

    alert = _pull_alert(local_cloud, name)
    assert alert["severity"] == "ERROR"
    assert "not under a dataset folder" in str(alert["summary"])
    assert alert["step"] == "validate"


def test_invalid_train_request_is_alerted_with_the_field(local_cloud: LocalCloud) -> None:
    publisher = local_cloud.bus._publisher
    marker = uuid.uuid4().hex
    body = json.dumps({"dataset": "credit", "tune": "sometimes", "reason": marker}).encode()

    publisher.publish(local_cloud.settings.topic_path("train-requests"), body).result(timeout=10)

    alert = _pull_alert(local_cloud, "tune")
    assert "invalid TrainRequest" in str(alert["summary"])
    stats = local_cloud.router_stats()
    assert stats.get("train.failed_attempts", 0) == 0
