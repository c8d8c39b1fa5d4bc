from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cascade.core.errors import BadRequestError, StaleEventError
from cascade.core.events import PubSubEnvelope, StorageObjectEvent, check_event_age, decode_message
from cascade.core.messages import DataValidated, TrainRequest

GOLDEN = Path(__file__).resolve().parents[1] / "data"


def _cloudevent(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    golden = json.loads((GOLDEN / name).read_text())
    attributes = {
        k.removeprefix("ce-"): v for k, v in golden["headers"].items() if k.startswith("ce-")
    }
    return attributes, golden["data"]


def test_storage_event_yields_the_object_and_generation() -> None:
    attributes, data = _cloudevent("storage_object_finalized.json")

    event = StorageObjectEvent.from_cloudevent(attributes, data)

    assert event.bucket == "sample-bucket"
    assert event.name == "folder/Test.cs"
    assert event.generation == 1587627537231057
    assert event.size == 352
    assert event.event_id == "1587627537231057"


def test_storage_event_without_generation_names_the_field() -> None:
    attributes, data = _cloudevent("storage_object_finalized.json")
    del data["generation"]

    with pytest.raises(BadRequestError, match="missing field 'generation'"):
        StorageObjectEvent.from_cloudevent(attributes, data)


def test_wrong_event_type_is_rejected() -> None:
    attributes, data = _cloudevent("pubsub_message_published.json")

    with pytest.raises(BadRequestError, match=r"expected 'google\.cloud\.storage"):
        StorageObjectEvent.from_cloudevent(attributes, data)


def test_pubsub_event_decodes_message_data_and_attributes() -> None:
    attributes, data = _cloudevent("pubsub_message_published.json")

    envelope = PubSubEnvelope.from_cloudevent(attributes, data)

    assert envelope.data == b'{"dataset": "credit"}'
    assert envelope.attributes == {"dataset": "credit"}
    assert envelope.message_id == "1413058901901494"
    assert envelope.subscription == "projects/my-project/subscriptions/my-subscription"


def test_invalid_message_body_names_the_bad_field() -> None:
    attributes, data = _cloudevent("pubsub_message_published.json")
    envelope = PubSubEnvelope.from_cloudevent(attributes, data)

    with pytest.raises(BadRequestError, match="invalid DataValidated: run_id: Field required"):
        decode_message(envelope, DataValidated)


def test_dataset_names_are_checked_in_messages() -> None:
    body = json.dumps({"dataset": "../etc", "request_id": "r1"}).encode()
    envelope = PubSubEnvelope(
        event_id="1", message_id="1", subscription="s", data=body, attributes={}
    )

    with pytest.raises(BadRequestError, match="invalid dataset name"):
        decode_message(envelope, TrainRequest)


def test_events_older_than_the_maximum_age_are_stale() -> None:
    attributes = {"id": "7", "time": "2026-11-27T10:00:00Z"}

    check_event_age(attributes, datetime(2026, 11, 27, 10, 59, tzinfo=UTC), max_age_s=3600)
    with pytest.raises(StaleEventError, match="dropping event 7"):
        check_event_age(attributes, datetime(2026, 11, 27, 11, 1, tzinfo=UTC), max_age_s=3600)
