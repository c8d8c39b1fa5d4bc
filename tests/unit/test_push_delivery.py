"""Each trigger gets what Google Cloud sends it, and each function's main.py accepts it.

Retrying topic triggers are Terraform-owned Pub/Sub push subscriptions: Pub/Sub POSTs a
raw wrapped push body, which functions-framework converts into a messagePublished
CloudEvent (no ``subscription``, ``@type`` in the message). Storage triggers and topic
triggers that must not retry are Eventarc triggers: a binary-mode CloudEvent. The golden
payloads in tests/data come from Google's published samples (tests/data/README.md).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import cascade.steps.training_job as training_job
from cascade.core.events import PubSubEnvelope
from cascade.core.messages import (
    BatchPredictRequest,
    DataValidated,
    JobEvent,
    ModelBlessed,
    ModelTrained,
    RunEnded,
    StepMessage,
    TrainRequest,
)
from cascade.core.paths import dead_letter_record
from cascade.core.settings import Settings
from cascade.core.topology import FunctionSpec, Topology, load_topology
from cascade.localcloud.pubsub_admin import Route
from cascade.localcloud.router import request_for
from cascade.steps.dead_letter import DeadLetter
from tests.function_client import REPO_ROOT, golden, load_function

TOPOLOGY: Topology = load_topology(REPO_ROOT / "infra" / "topology.yaml")
EVENT_FUNCTIONS = [spec.name for spec in TOPOLOGY.event_functions()]

# The message each step's topic carries, and the name under which the function's main.py
# calls the step (replaced by a recorder). A function missing here fails
# test_every_event_function_is_covered.
STEP_MESSAGES: dict[str, tuple[StepMessage, str]] = {
    "transform": (
        DataValidated.model_validate(
            {
                "dataset": "credit",
                "run_id": "credit-r1",
                "source": {"bucket": "landing", "name": "credit/a.csv", "generation": 7},
            }
        ),
        "handle_data_validated",
    ),
    "monitor": (
        DataValidated.model_validate(
            {
                "dataset": "credit",
                "run_id": "credit-r1",
                "source": {"bucket": "landing", "name": "credit/a.csv", "generation": 7},
            }
        ),
        "handle_data_validated",
    ),
    "train": (TrainRequest(dataset="credit", request_id="r1"), "handle_train_request"),
    "evaluate": (ModelTrained(dataset="credit", run_id="credit-r1"), "handle_model_trained"),
    "deploy": (ModelBlessed(dataset="credit", run_id="credit-r1"), "handle_model_blessed"),
    "batch-predict": (
        BatchPredictRequest(dataset="credit", request_id="r1", table="p-12345.d.t"),
        "handle_batch_predict_request",
    ),
    "evaluate-job-events": (
        JobEvent(dataset="credit", run_id="credit-r1", job_name="jobs/1", state="failed"),
        "handle_job_event",
    ),
    "report": (RunEnded(dataset="credit", run_id="credit-r1", state="failed"), "render_ended_run"),
}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _push_body(message: StepMessage) -> tuple[str, dict[str, str], bytes, datetime]:
    """Google's push example, carrying ``message`` as a Cascade step would publish it."""
    sample = golden("pubsub_push_request.json")
    body = sample["body"]
    body["message"]["data"] = base64.b64encode(message.model_dump_json().encode()).decode()
    body["message"]["attributes"] = message.attributes()
    return (
        sample["path"],
        sample["headers"],
        json.dumps(body).encode(),
        _time(body["message"]["publishTime"]),
    )


def test_every_event_function_is_covered() -> None:
    assert set(EVENT_FUNCTIONS) == {
        *STEP_MESSAGES,
        "validate",
        "dead-letters",
        "reconcile",
        "batch-collect",
        "extract",
    }


def test_deliveries_are_what_terraform_sets_up() -> None:
    deliveries = {name: TOPOLOGY.functions[name].delivery for name in EVENT_FUNCTIONS}

    assert deliveries == {
        "validate": "eventarc",
        "transform": "push",
        "monitor": "push",
        "train": "push",
        "evaluate": "push",
        "evaluate-job-events": "push",
        "deploy": "push",
        "batch-predict": "push",
        "dead-letters": "eventarc",
        "report": "push",
        "reconcile": "eventarc",
        "batch-collect": "eventarc",
        "extract": "push",
    }


@pytest.mark.parametrize("name", sorted(STEP_MESSAGES))
def test_a_push_body_reaches_the_step_with_its_message(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    message, step = STEP_MESSAGES[name]
    path, headers, body, published = _push_body(message)
    function, ctx = load_function(TOPOLOGY.functions[name], monkeypatch, published)
    target = training_job if step == "handle_job_event" else function.module
    monkeypatch.setattr(target, step, function.record)

    status = function.post(path, headers, body)

    assert status == 200
    [(received, event_id)] = function.calls
    assert received == message
    assert event_id == "2070443601311540"  # the push body's messageId
    assert ctx.bus.published == []  # type: ignore[attr-defined]  # no rejection alert


def test_a_storage_event_reaches_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = golden("storage_object_finalized.json")
    function, _ = load_function(
        TOPOLOGY.functions["validate"], monkeypatch, _time(sample["headers"]["ce-time"])
    )
    monkeypatch.setattr(function.module, "handle_object_finalized", function.record)

    status = function.post("/", sample["headers"], json.dumps(sample["data"]).encode())

    assert status == 200
    [(event,)] = function.calls
    assert (event.bucket, event.name, event.generation) == (
        "sample-bucket",
        "folder/Test.cs",
        1587627537231057,
    )


def test_an_eventarc_dead_letter_reaches_the_dead_letter_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample = golden("pubsub_message_published.json")
    forwarded = {
        k: v for k, v in golden("pubsub_dead_letter_attributes.json").items() if k[0] != "_"
    }
    message = TrainRequest(dataset="credit", request_id="r1")
    data = sample["data"]
    data["message"]["data"] = base64.b64encode(message.model_dump_json().encode()).decode()
    data["message"]["attributes"] = {**message.attributes(), **forwarded}
    function, ctx = load_function(
        TOPOLOGY.functions["dead-letters"], monkeypatch, _time(sample["headers"]["ce-time"])
    )

    status = function.post("/", sample["headers"], json.dumps(data).encode())

    assert status == 200
    stored = ctx.artifacts.read_model(dead_letter_record("1413058901901494"), DeadLetter)
    assert stored is not None
    letter = stored[0]
    assert (letter.source_subscription, letter.delivery_attempts) == ("my-subscription-name", 5)
    assert (letter.message_type, letter.dataset) == ("TrainRequest", "credit")


def test_a_scheduled_sweep_reaches_the_reconcile_step(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = golden("pubsub_message_published.json")
    data = sample["data"]
    data["message"]["data"] = base64.b64encode(b'{"stale_after_s":600}').decode()
    data["message"]["attributes"] = {"origin": "cloud-scheduler", "schedule": "reconcile"}
    function, _ = load_function(
        TOPOLOGY.functions["reconcile"], monkeypatch, _time(sample["headers"]["ce-time"])
    )
    monkeypatch.setattr(function.module, "handle_reconcile_request", function.record)

    status = function.post("/", sample["headers"], json.dumps(data).encode())

    assert status == 200
    [(attributes, received)] = function.calls
    assert attributes["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    envelope = PubSubEnvelope.from_cloudevent(attributes, received)
    assert json.loads(envelope.data) == TOPOLOGY.schedules["reconcile"].data


def test_a_scheduled_sweep_reaches_the_batch_collect_step(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = golden("pubsub_message_published.json")
    data = sample["data"]
    data["message"]["data"] = base64.b64encode(b'{"lookback_s":604800}').decode()
    data["message"]["attributes"] = {"origin": "cloud-scheduler", "schedule": "batch-collect"}
    function, _ = load_function(
        TOPOLOGY.functions["batch-collect"], monkeypatch, _time(sample["headers"]["ce-time"])
    )
    monkeypatch.setattr(function.module, "handle_batch_collect_request", function.record)

    status = function.post("/", sample["headers"], json.dumps(data).encode())

    assert status == 200
    [(attributes, received)] = function.calls
    envelope = PubSubEnvelope.from_cloudevent(attributes, received)
    assert json.loads(envelope.data) == TOPOLOGY.schedules["batch-collect"].data


@pytest.mark.parametrize(
    "data",
    [{"dataset": "credit", "request_id": "r1"}, TOPOLOGY.schedules["extract"].data],
    ids=["one-dataset", "the-schedules-sweep"],
)
def test_a_push_body_reaches_the_extract_step(
    data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = golden("pubsub_push_request.json")
    body = sample["body"]
    body["message"]["data"] = base64.b64encode(json.dumps(data).encode()).decode()
    body["message"]["attributes"] = {"origin": "cloud-scheduler", "schedule": "extract"}
    function, ctx = load_function(
        TOPOLOGY.functions["extract"], monkeypatch, _time(body["message"]["publishTime"])
    )
    monkeypatch.setattr(function.module, "handle_extract_request", function.record)

    status = function.post(sample["path"], sample["headers"], json.dumps(body).encode())

    assert status == 200
    [(attributes, received)] = function.calls
    envelope = PubSubEnvelope.from_cloudevent(attributes, received)
    assert json.loads(envelope.data) == data
    assert ctx.bus.published == []  # type: ignore[attr-defined]  # no rejection alert


# ------------------------------------------------------------------ the router's side


@dataclass
class _Pulled:
    """A message as the router pulls it from the emulator."""

    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime


_SETTINGS = Settings(project="my-project", landing_bucket="sample-bucket")


def _route(spec: FunctionSpec) -> Route:
    return Route(spec.name, "my-topic", f"eventarc-{spec.name}")


def _pulled() -> _Pulled:
    return _Pulled(
        message_id="1413058901901494",
        data=TrainRequest(dataset="credit", request_id="r1").model_dump_json().encode(),
        attributes={"dataset": "credit"},
        publish_time=datetime(2020, 12, 8, 20, 3, 19, 162000, tzinfo=UTC),
    )


@pytest.mark.parametrize("name", [n for n in EVENT_FUNCTIONS if n != "validate"])
def test_the_router_sends_each_topic_trigger_its_google_shape(name: str) -> None:
    spec = TOPOLOGY.functions[name]

    request = request_for(spec, _route(spec), _pulled(), _SETTINGS, delivery_attempt=3)

    assert request is not None
    headers = {key.lower(): value for key, value in request.headers.items()}
    body = json.loads(request.body)
    if spec.delivery == "push":
        sample = golden("pubsub_push_request.json")
        assert headers == sample["headers"]
        assert request.path == "/projects/my-project/topics/my-topic"
        assert set(body) == set(sample["body"])
        assert set(body["message"]) == set(sample["body"]["message"])
        assert body["deliveryAttempt"] == 3
        assert body["subscription"] == f"projects/my-project/subscriptions/eventarc-{name}"
    else:
        sample = golden("pubsub_message_published.json")
        assert set(headers) == set(sample["headers"])
        assert headers["ce-type"] == sample["headers"]["ce-type"]
        assert headers["ce-source"] == "//pubsub.googleapis.com/projects/my-project/topics/my-topic"
        assert request.path == "/"
        assert set(body) == set(sample["data"])
        assert set(body["message"]) == set(sample["data"]["message"])


def test_the_router_sends_the_storage_trigger_an_eventarc_event() -> None:
    spec = TOPOLOGY.functions["validate"]
    sample = golden("storage_object_finalized.json")
    resource = {k: v for k, v in sample["data"].items() if k not in ("etag", "selfLink")}
    pulled = _Pulled(
        message_id="1587627537231057",
        data=json.dumps(resource).encode(),
        attributes={"eventType": "OBJECT_FINALIZE", "bucketId": "sample-bucket"},
        publish_time=datetime(2020, 4, 23, tzinfo=UTC),
    )

    request = request_for(spec, _route(spec), pulled, _SETTINGS, delivery_attempt=1)

    assert request is not None
    assert request.path == "/"
    assert {k.lower(): v for k, v in request.headers.items()} == sample["headers"]
    assert json.loads(request.body) == sample["data"]


def test_a_router_push_converts_to_the_cloudevent_functions_framework_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round trip: the router's push request, through functions-framework, is the
    golden converted CloudEvent (modulo ids, times and the topic)."""
    spec = TOPOLOGY.functions["train"]
    request = request_for(spec, _route(spec), _pulled(), _SETTINGS, delivery_attempt=1)
    assert request is not None
    function, _ = load_function(spec, monkeypatch, _pulled().publish_time)
    seen: list[Any] = []
    monkeypatch.setattr(function.module, "run_pubsub_event", lambda event, *_: seen.append(event))

    assert function.post(request.path, request.headers, request.body) == 200

    [event] = seen
    expected = golden("pubsub_push_cloudevent.json")
    assert set(event.get_attributes()) == set(expected["attributes"])
    assert event["source"] == "//pubsub.googleapis.com/projects/my-project/topics/my-topic"
    assert event["id"] == "1413058901901494"
    assert set(event.data) == set(expected["data"])
    assert set(event.data["message"]) == set(expected["data"]["message"])


def test_the_golden_push_converts_to_the_golden_cloudevent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = TOPOLOGY.functions["train"]
    sample = golden("pubsub_push_request.json")
    function, _ = load_function(spec, monkeypatch, datetime.now(UTC))
    seen: list[Any] = []
    monkeypatch.setattr(function.module, "run_pubsub_event", lambda event, *_: seen.append(event))

    status = function.post(sample["path"], sample["headers"], json.dumps(sample["body"]).encode())

    assert status == 200
    [event] = seen
    expected = golden("pubsub_push_cloudevent.json")
    assert dict(event.get_attributes()) == expected["attributes"]
    assert event.data == expected["data"]


def test_golden_files_name_their_source() -> None:
    readme = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text()
    for path in (REPO_ROOT / "tests" / "data").glob("*.json"):
        assert f"`{path.name}`" in readme, path.name
        assert "_comment" in json.loads(path.read_text()), path.name
