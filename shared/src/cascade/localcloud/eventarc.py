"""The HTTP requests Google Cloud sends to a function, built from Pub/Sub messages.

The router plays Eventarc and Pub/Sub push:

- Eventarc: a GCS notification becomes a binary-mode
  ``google.cloud.storage.object.v1.finalized`` event whose data is the object resource,
  and a topic message becomes ``google.cloud.pubsub.topic.v1.messagePublished`` whose
  data is ``{"message": {...}, "subscription": ...}``. The emulator's object JSON is
  normalised to what Cloud Storage sends (string int64s, ``bucket/name/generation`` ids,
  selfLink/mediaLink, metageneration, etag).
- Pub/Sub push (wrapped, as infra/pubsub.tf configures it: no ``no_wrapper`` block): a
  plain JSON POST ``{"message": {...}, "subscription": ..., "deliveryAttempt": n}`` to
  the push endpoint ``<function url>/projects/<p>/topics/<topic>``; functions-framework
  turns it into a messagePublished CloudEvent itself.

A ``ce-*`` header value is percent-encoded as the CloudEvents HTTP binding (1.0.2)
requires: space, double-quote, ``%`` and everything outside printable ASCII, as UTF-8
bytes; the object resource in the body keeps the name as it is (the steps read the name
from there, never from ``ce-subject``). Without this, an object named ``ds/a\nb.csv`` or
``ds/数据.csv`` could not be delivered at all: no run, a dead letter.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

from cascade.core.topology import PUBSUB_PUBLISHED, STORAGE_FINALIZED

__all__ = [
    "PUSH_USER_AGENT",
    "CloudEventRequest",
    "message_published_event",
    "object_finalized_event",
    "pubsub_push_request",
]

# The User-Agent of Pub/Sub push requests (Google's "APIs-Google" user agent, which
# delivers push notifications: developers.google.com/search/docs/crawling-indexing/
# apis-user-agent).
PUSH_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"

_INT64_FIELDS = ("generation", "metageneration", "size")


class CloudEventRequest:
    """Path, headers and body of one POST to a function: a binary-mode CloudEvent
    (Eventarc, path "/") or a Pub/Sub push body (path: the push endpoint's path)."""

    def __init__(self, headers: dict[str, str], body: bytes, path: str = "/") -> None:
        self.headers = headers
        self.body = body
        self.path = path


def _header_value(value: str) -> str:
    """``value`` as header text: space, double-quote, ``%`` and every byte outside
    printable ASCII (U+0021-U+007E) of its UTF-8 encoding percent-encoded."""
    return "".join(
        chr(byte) if 0x21 <= byte <= 0x7E and byte not in (0x22, 0x25) else f"%{byte:02X}"
        for byte in value.encode("utf-8", "surrogatepass")
    )


def _ce_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: _header_value(v) if k.startswith("ce-") else v for k, v in headers.items()}


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _etag(generation: int, metageneration: int) -> str:
    """Cloud Storage's etag: base64 of the protobuf (generation=1, metageneration=2)."""
    encoded = b"\x08" + _varint(generation) + b"\x10" + _varint(metageneration)
    return base64.b64encode(encoded).decode()


def normalise_object_resource(resource: dict[str, Any]) -> dict[str, Any]:
    """The emulator's object JSON as Cloud Storage's StorageObjectData."""
    data = dict(resource)
    bucket, name = str(data["bucket"]), str(data["name"])
    generation = str(data.get("generation") or "")
    data["kind"] = "storage#object"
    data["id"] = f"{bucket}/{name}/{generation}"
    data.setdefault("metageneration", "1")
    for field in _INT64_FIELDS:
        if field in data and data[field] is not None:
            data[field] = str(data[field])
    encoded = quote(name, safe="")
    data.setdefault("selfLink", f"https://www.googleapis.com/storage/v1/b/{bucket}/o/{encoded}")
    data.setdefault(
        "mediaLink",
        f"https://storage.googleapis.com/download/storage/v1/b/{bucket}/o/{encoded}"
        f"?generation={generation}&alt=media",
    )
    data.setdefault("etag", _etag(int(generation or 0), int(data["metageneration"])))
    data.setdefault("timeStorageClassUpdated", data.get("timeCreated"))
    return data


def object_finalized_event(
    *, message_id: str, object_resource: dict[str, Any], fallback_time: datetime
) -> CloudEventRequest:
    """The Eventarc CloudEvent for a finalized object."""
    data = normalise_object_resource(object_resource)
    bucket = str(data["bucket"])
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": message_id,
        "ce-type": STORAGE_FINALIZED,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "ce-subject": f"objects/{data['name']}",
        "ce-time": str(data.get("updated") or data.get("timeCreated") or _rfc3339(fallback_time)),
        "ce-bucket": bucket,
    }
    return CloudEventRequest(_ce_headers(headers), json.dumps(data).encode())


def _pubsub_message(
    message_id: str, data: bytes, attributes: dict[str, str], publish_time: datetime
) -> dict[str, Any]:
    """A PubsubMessage as push and Eventarc write it: camelCase and snake_case ids and
    times; ``data`` and ``attributes`` left out when empty (proto3 JSON)."""
    published = _rfc3339(publish_time)
    message: dict[str, Any] = {}
    if attributes:
        message["attributes"] = dict(attributes)
    if data:
        message["data"] = base64.b64encode(data).decode()
    message.update(
        {
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": published,
            "publish_time": published,
        }
    )
    return message


def pubsub_push_request(
    *,
    project: str,
    topic_id: str,
    subscription_id: str,
    message_id: str,
    data: bytes,
    attributes: dict[str, str],
    publish_time: datetime,
    delivery_attempt: int | None,
) -> CloudEventRequest:
    """The POST a wrapped Pub/Sub push subscription sends.

    ``delivery_attempt`` is set when the subscription has a dead-letter policy (every
    Terraform-owned push subscription has one), None otherwise.
    """
    body: dict[str, Any] = {
        "message": _pubsub_message(message_id, data, attributes, publish_time),
        "subscription": f"projects/{project}/subscriptions/{subscription_id}",
    }
    if delivery_attempt is not None:
        body["deliveryAttempt"] = delivery_attempt
    headers = {"Content-Type": "application/json", "User-Agent": PUSH_USER_AGENT}
    # infra/pubsub.tf: push_endpoint = "<function uri>/projects/<p>/topics/<topic id>",
    # from which functions-framework takes the CloudEvent's source.
    path = f"/projects/{project}/topics/{topic_id}"
    return CloudEventRequest(headers, json.dumps(body).encode(), path=path)


def message_published_event(
    *,
    project: str,
    topic_id: str,
    subscription_id: str,
    message_id: str,
    data: bytes,
    attributes: dict[str, str],
    publish_time: datetime,
) -> CloudEventRequest:
    """The Eventarc CloudEvent for a message published to a topic."""
    published = _rfc3339(publish_time)
    body = {
        "message": _pubsub_message(message_id, data, attributes, publish_time),
        "subscription": f"projects/{project}/subscriptions/{subscription_id}",
    }
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": message_id,
        "ce-type": PUBSUB_PUBLISHED,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic_id}",
        "ce-time": published,
    }
    return CloudEventRequest(_ce_headers(headers), json.dumps(body).encode())
