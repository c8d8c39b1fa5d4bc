"""The event router delivers what Google Cloud delivers (Eventarc CloudEvents, Pub/Sub push
bodies), retries with backoff and dead-letters."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.clients import make_subscriber
from cascade.localcloud.processes import wait_until
from cascade.localcloud.pubsub_admin import archive_subscription_id
from tests.conftest import REPO_ROOT, LocalCloud

pytestmark = pytest.mark.integration

GOLDEN = REPO_ROOT / "tests" / "data"


def _golden(name: str) -> dict[str, Any]:
    return dict(json.loads((GOLDEN / name).read_text()))


def _records(folder: Path) -> list[dict[str, Any]]:
    """The events the recorder wrote to ``folder``; not one it is writing now."""
    records: list[dict[str, Any]] = []
    for path in folder.glob("*.json"):
        with contextlib.suppress(ValueError):  # half-written
            records.append(json.loads(path.read_text()))
    return records


def _wait_for_records(folder: Path, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        matching = [record for record in _records(folder) if predicate(record)]
        if matching:
            return matching
        time.sleep(0.05)
    raise AssertionError(f"no matching event recorded in {folder} within {timeout}s")


def _ce_headers(golden: dict[str, Any]) -> dict[str, str]:
    return {k.removeprefix("ce-"): v for k, v in golden["headers"].items() if k.startswith("ce-")}


def test_upload_reaches_function_as_storage_cloudevent(local_cloud: LocalCloud) -> None:
    golden = _golden("storage_object_finalized.json")
    name = f"ds{uuid.uuid4().hex[:8]}/orders 2026+q1.csv"

    generation = local_cloud.upload(name, sample_csv(5))

    [record] = _wait_for_records(
        local_cloud.record_dir / "recorder-storage", lambda r: r["data"]["name"] == name
    )
    attributes, data = record["attributes"], record["data"]
    bucket = local_cloud.settings.landing_bucket
    assert set(_ce_headers(golden)) <= set(attributes)
    assert attributes["type"] == "google.cloud.storage.object.v1.finalized"
    assert attributes["source"] == f"//storage.googleapis.com/projects/_/buckets/{bucket}"
    # The binding percent-encodes header values (the space here); the SDK passes them on.
    assert attributes["subject"] == f"objects/{quote(name, safe='/+')}"
    assert attributes["specversion"] == "1.0"
    assert attributes["bucket"] == bucket
    assert set(data) == set(golden["data"])
    assert data["generation"] == str(generation)
    assert data["id"] == f"{bucket}/{name}/{generation}"
    assert data["selfLink"].endswith(
        "/o/" + name.replace("/", "%2F").replace(" ", "%20").replace("+", "%2B")
    )
    assert all(isinstance(data[k], str) for k in ("generation", "metageneration", "size"))


def test_publish_reaches_a_retrying_topic_trigger_as_a_converted_push(
    local_cloud: LocalCloud,
) -> None:
    """recorder-topic retries (topology default), so Terraform feeds it from a Pub/Sub push
    subscription: the router POSTs the raw push body and functions-framework converts it
    (no subscription, '@type' in the message), as tests/data/pubsub_push_cloudevent.json."""
    golden = _golden("pubsub_push_cloudevent.json")
    marker = uuid.uuid4().hex
    publisher = local_cloud.bus._publisher  # the same client the steps use

    message_id = publisher.publish(
        local_cloud.settings.topic_path("test-recorded"), b'{"hello": "world"}', marker=marker
    ).result(timeout=10)

    [record] = _wait_for_records(
        local_cloud.record_dir / "recorder-topic",
        lambda r: r["data"]["message"].get("attributes", {}).get("marker") == marker,
    )
    attributes, data = record["attributes"], record["data"]
    topic = local_cloud.settings.topic_id("test-recorded")
    project = local_cloud.settings.project
    assert set(attributes) == set(golden["attributes"])
    assert attributes["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert attributes["source"] == f"//pubsub.googleapis.com/projects/{project}/topics/{topic}"
    assert attributes["id"] == message_id
    assert set(data) == set(golden["data"])  # no "subscription": dropped by the conversion
    assert set(data["message"]) == set(golden["data"]["message"])
    assert data["message"]["@type"] == golden["data"]["message"]["@type"]
    assert data["message"]["messageId"] == message_id
    assert data["message"]["data"] == "eyJoZWxsbyI6ICJ3b3JsZCJ9"


def _flaky_attempts(local_cloud: LocalCloud, message_id: str, expected: int) -> list[float]:
    """The arrival times of the flaky function's attempts at ``message_id``: once
    ``expected`` arrived, watched for longer than the router's pause before the next
    attempt would be (the backoff after ``expected`` failures), so a further attempt
    is caught."""
    log = local_cloud.record_dir / "flaky" / f"{message_id}.jsonl"

    def attempts() -> list[float]:
        text = log.read_text() if log.exists() else ""
        complete = text.split("\n")[:-1]  # not a line the function is writing now
        return [json.loads(line)["at"] for line in complete]

    if not wait_until(lambda: len(attempts()) >= expected, timeout=30):
        raise AssertionError(f"{message_id}: {len(attempts())} attempts, not {expected}")
    # The backoff, plus a second for a POST's own latency on a loaded machine.
    next_attempt_s = local_cloud.scaled_backoff_s("flaky", expected) + 1.0
    watch_until = attempts()[expected - 1] + next_attempt_s  # the time.time() of the record
    while time.time() < watch_until:
        assert len(attempts()) == expected, f"{message_id}: an attempt after {expected}"
        time.sleep(0.05)
    return attempts()


def _publish_flaky(local_cloud: LocalCloud, fail_times: int) -> str:
    publisher = local_cloud.bus._publisher
    topic = local_cloud.settings.topic_path("test-flaky")
    return str(publisher.publish(topic, b"{}", fail_times=str(fail_times)).result(timeout=10))


def test_failing_function_is_retried_with_exponential_backoff(local_cloud: LocalCloud) -> None:
    failures = 3
    message_id = _publish_flaky(local_cloud, fail_times=failures)

    attempts = _flaky_attempts(local_cloud, message_id, expected=failures + 1)

    assert len(attempts) == failures + 1  # the failures, then success; no further delivery
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    backoffs = [local_cloud.scaled_backoff_s("flaky", n) for n in range(1, failures + 1)]
    for failed, (gap, backoff) in enumerate(zip(gaps, backoffs, strict=True), start=1):
        assert gap >= backoff * 0.9, f"attempt {failed + 1} came {gap:.2f}s after, not {backoff}s"
    assert backoffs[-1] > backoffs[0]  # exponential: the pause grows
    assert gaps[-1] > gaps[0]


def test_exhausted_retries_go_to_the_dead_letter_topic(local_cloud: LocalCloud) -> None:
    subscriber = make_subscriber(local_cloud.settings)
    dead_letters = subscriber.subscription_path(
        local_cloud.settings.project, archive_subscription_id(local_cloud.settings, "dead-letter")
    )

    max_attempts = local_cloud.retry_policy("flaky").max_delivery_attempts
    message_id = _publish_flaky(local_cloud, fail_times=max_attempts + 10)

    attempts = _flaky_attempts(local_cloud, message_id, expected=max_attempts)
    assert len(attempts) == max_attempts
    found = None
    deadline = time.monotonic() + 20
    while found is None and time.monotonic() < deadline:
        response = subscriber.pull(subscription=dead_letters, max_messages=50, timeout=5)
        for received in response.received_messages:
            subscriber.acknowledge(subscription=dead_letters, ack_ids=[received.ack_id])
            if received.message.attributes.get("cascade_function") == "flaky":
                found = received.message
    assert found is not None, "the message never reached the dead-letter topic"
    assert found.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == str(max_attempts)
    assert found.attributes["CloudPubSubDeadLetterSourceSubscription"] == "eventarc-flaky"
    assert found.attributes["cascade_last_error"].startswith("HTTP 500")
    added_by_pubsub = _golden("pubsub_dead_letter_attributes.json")
    assert {k for k in added_by_pubsub if not k.startswith("_")} <= set(found.attributes)
    assert re.fullmatch(  # as Pub/Sub writes it: 2022-08-12T15:56:29.732+00:00
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00",
        found.attributes["CloudPubSubDeadLetterSourceTopicPublishTime"],
    )
