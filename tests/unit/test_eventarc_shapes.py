"""The router's CloudEvents have the shapes of tests/data's golden payloads."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cascade.localcloud.eventarc import (
    message_published_event,
    normalise_object_resource,
    object_finalized_event,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data"


def _golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name).read_text())


def _emulator_resource() -> dict[str, Any]:
    """An object resource as fake-gcs-server publishes it (fewer fields than GCS)."""
    return {
        "kind": "storage#object",
        "id": "sample-bucket/folder/Test.cs#1587627537231057",
        "name": "folder/Test.cs",
        "bucket": "sample-bucket",
        "generation": "1587627537231057",
        "contentType": "text/plain",
        "timeCreated": "2020-04-23T07:38:57.230Z",
        "updated": "2020-04-23T07:38:57.230Z",
        "storageClass": "STANDARD",
        "size": "352",
        "md5Hash": "kF8MuJ5+CTJxvyhHS1xzRg==",
        "crc32c": "rTVTeQ==",
    }


def test_object_resource_is_normalised_to_cloud_storage_shape() -> None:
    golden = _golden("storage_object_finalized.json")["data"]

    data = normalise_object_resource(_emulator_resource())

    assert data == golden


def test_object_finalized_event_headers_match_eventarc() -> None:
    golden = _golden("storage_object_finalized.json")

    event = object_finalized_event(
        message_id="1587627537231057",
        object_resource=_emulator_resource(),
        fallback_time=datetime.now(UTC),
    )

    headers = {key.lower(): value for key, value in event.headers.items()}
    assert headers == golden["headers"]
    assert json.loads(event.body) == golden["data"]


def test_message_published_event_matches_eventarc() -> None:
    golden = _golden("pubsub_message_published.json")

    event = message_published_event(
        project="my-project",
        topic_id="my-topic",
        subscription_id="my-subscription",
        message_id="1413058901901494",
        data=base64.b64decode(golden["data"]["message"]["data"]),
        attributes={"dataset": "credit"},
        publish_time=datetime(2020, 12, 8, 20, 3, 19, 162000, tzinfo=UTC),
    )

    headers = {key.lower(): value for key, value in event.headers.items()}
    assert headers == {**golden["headers"], "ce-time": "2020-12-08T20:03:19.162000Z"}
    body = json.loads(event.body)
    assert body["subscription"] == golden["data"]["subscription"]
    assert body["message"]["data"] == golden["data"]["message"]["data"]
    assert body["message"]["attributes"] == golden["data"]["message"]["attributes"]
    assert set(body["message"]) == set(golden["data"]["message"])


def test_header_values_are_percent_encoded_as_the_http_binding_requires() -> None:
    """CloudEvents HTTP binding 1.0.2, 3.1.3.2: space, double-quote, percent and all
    outside U+0021-U+007E are percent-encoded (UTF-8); the body keeps the name."""
    name = 'ds/a b"c%d\ne數.csv'
    resource = {**_emulator_resource(), "name": name, "id": f"sample-bucket/{name}#1"}

    event = object_finalized_event(
        message_id="1", object_resource=resource, fallback_time=datetime.now(UTC)
    )

    headers = {key.lower(): value for key, value in event.headers.items()}
    assert headers["ce-subject"] == "objects/ds/a%20b%22c%25d%0Ae%E6%95%B8.csv"
    assert all(value.isascii() and value.isprintable() for value in headers.values())
    assert json.loads(event.body)["name"] == name
