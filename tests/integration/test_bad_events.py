"""Events no retry can fix are alerted and acknowledged, never retried into a loop."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from cascade.core.clients import make_subscriber
from cascade.core.topology import StorageTrigger, load_topology
from cascade.localcloud.pubsub_admin import archive_subscription_id
from cascade.localcloud.router import STREAM_ACK_DEADLINE_S
from cascade.validation.names import INVALID_NAMES_DATASET
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

    generation = local_cloud.upload(name, b"a,b\n1,2\n")

    alert = _pull_alert(local_cloud, name)
    assert alert["severity"] == "ERROR"
    assert "at the bucket's root" in str(alert["summary"])
    assert alert["step"] == "validate"
    # recorded (so `cascade status` shows it) under the pseudo-dataset of refused names
    run_id = local_cloud.run_id_for(name, generation)
    assert run_id.startswith(f"{INVALID_NAMES_DATASET}-")
    assert alert["run_id"] == run_id
    run = local_cloud.wait_for_run(run_id, timeout=30)
    assert run.state == "failed"
    assert run.steps["validate"].attempts == 1


def test_invalid_train_request_is_alerted_with_the_field(local_cloud: LocalCloud) -> None:
    publisher = local_cloud.bus._publisher
    marker = uuid.uuid4().hex
    body = json.dumps({"dataset": "credit", "tune": "sometimes", "reason": marker}).encode()
    stats_before = local_cloud.router_stats()

    publisher.publish(local_cloud.settings.topic_path("train-requests"), body).result(timeout=10)

    alert = _pull_alert(local_cloud, "tune")
    assert "invalid TrainRequest" in str(alert["summary"])
    stats = local_cloud.wait_until_router_idle()  # a retry would have come by now
    assert stats.get("train.failed_attempts", 0) == stats_before.get("train.failed_attempts", 0)
    assert stats.get("train.delivered", 0) > stats_before.get("train.delivered", 0)


def _dead_letters_of(
    local_cloud: LocalCloud, message_ids: set[str], deadline: float, each: int = 1
) -> dict[str, list[dict[str, str]]]:
    """The dead letters (their attributes) of ``message_ids`` on the archive subscription,
    pulled until each has one or ``deadline`` (monotonic) passes."""
    subscriber = make_subscriber(local_cloud.settings)
    subscription = subscriber.subscription_path(
        local_cloud.settings.project, archive_subscription_id(local_cloud.settings, "dead-letter")
    )
    found: dict[str, list[dict[str, str]]] = {message_id: [] for message_id in message_ids}
    while time.monotonic() < deadline and not all(len(f) >= each for f in found.values()):
        response = subscriber.pull(subscription=subscription, max_messages=50, timeout=5)
        for received in response.received_messages:
            subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
            attributes = dict(received.message.attributes)
            if attributes.get("objectId") in message_ids:
                found[attributes["objectId"]].append(attributes)
    return found


def test_malformed_storage_notifications_are_dead_lettered_once_not_redelivered(
    local_cloud: LocalCloud,
) -> None:
    """A notification the router cannot turn into an Eventarc event (data not JSON, an
    object resource without a bucket) is dead-lettered at once with the reason, counted,
    logged once, and acknowledged: never nacked into a redelivery loop."""
    publisher = local_cloud.bus._publisher
    topic = (
        f"projects/{local_cloud.settings.project}/topics/{local_cloud.local.notifications_topic}"
    )
    bodies = {
        f"bad-{uuid.uuid4().hex[:8]}": b"{this is not json",
        f"nobucket-{uuid.uuid4().hex[:8]}": json.dumps(
            {"name": "x.csv", "generation": "1"}
        ).encode(),
    }
    stats_before = local_cloud.router_stats()
    message_ids = {}
    for marker, data in bodies.items():
        message_ids[marker] = publisher.publish(
            topic,
            data,
            eventType="OBJECT_FINALIZE",
            bucketId=local_cloud.settings.landing_bucket,
            objectId=marker,
            objectGeneration="1",
        ).result(timeout=10)

    topology = load_topology(local_cloud.local.topology_file)
    storage_functions = sorted(
        name
        for name, spec in topology.functions.items()
        if isinstance(spec.trigger, StorageTrigger)
    )  # validate, and the tests' recorder-storage: each trigger dead-letters its copy
    found = _dead_letters_of(
        local_cloud, set(bodies), time.monotonic() + 30, each=len(storage_functions)
    )

    for marker, letters in found.items():
        functions = sorted(letter["cascade_function"] for letter in letters)
        assert functions == storage_functions, f"{marker}: dead letters from {functions}"
        [letter] = [letter for letter in letters if letter["cascade_function"] == "validate"]
        assert letter["CloudPubSubDeadLetterSourceDeliveryCount"] == "1"
        assert letter["CloudPubSubDeadLetterSourceSubscription"] == "eventarc-validate"
        assert letter["cascade_last_error"].startswith("malformed storage notification")
    assert (
        "JSONDecodeError"
        in found[next(m for m in bodies if m.startswith("bad-"))][0]["cascade_last_error"]
    )
    assert (
        "no bucket"
        in found[next(m for m in bodies if m.startswith("nobucket-"))][0]["cascade_last_error"]
    )

    def counted(key: str) -> int:
        return local_cloud.router_stats().get(key, 0) - stats_before.get(key, 0)

    # Nothing more arrives: a nacked or unacknowledged message would come back within
    # the streams' ack deadline (and a nacked one at once).
    quiet_until = time.monotonic() + STREAM_ACK_DEADLINE_S + 2
    while time.monotonic() < quiet_until:
        assert counted("validate.malformed") == 2
        assert counted("validate.dead_lettered") == 2
        time.sleep(0.2)
    assert _dead_letters_of(local_cloud, set(bodies), time.monotonic() + 2) == {
        marker: [] for marker in bodies
    }
    log = (local_cloud.local.state_dir / "logs" / "event-router.log").read_text(errors="replace")
    for marker, message_id in message_ids.items():
        lines = [line for line in log.splitlines() if f" message {message_id} " in line]
        assert len(lines) == len(storage_functions), f"{marker}: {len(lines)} log lines"
        assert all("dead-lettered after 1 attempts" in line for line in lines)
