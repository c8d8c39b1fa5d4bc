"""The event router's message handling, without an emulator: what it acks, nacks,
dead-letters and counts, and the lease it asks of its streams."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cascade.core.topology import Topology, load_topology
from cascade.localcloud.eventarc import CloudEventRequest
from cascade.localcloud.function_host import PENDING_S
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.message_ids import recorded_floor
from cascade.localcloud.processes import wait_until
from cascade.localcloud.pubsub_admin import Route
from cascade.localcloud.router import STREAM_ACK_DEADLINE_S, EventRouter
from tests.function_client import REPO_ROOT

TOPOLOGY: Topology = load_topology(REPO_ROOT / "infra" / "topology.yaml")
NOTIFICATION = {"eventType": "OBJECT_FINALIZE", "bucketId": "cascade-landing"}


class _Future:
    def __init__(self, error: Exception | None = None) -> None:
        self._error = error

    def result(self, timeout: float | None = None) -> str:
        if self._error is not None:
            raise self._error
        return "1"


class _Publisher:
    def __init__(self, error: Exception | None = None) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self._error = error

    def publish(self, topic: str, data: bytes, **attributes: str) -> _Future:
        if self._error is None:
            self.published.append((topic, data, attributes))
        return _Future(self._error)


class _Subscriber:
    def __init__(self) -> None:
        self.subscribed: list[dict[str, Any]] = []
        self.settled: list[tuple[str, str, int | None]] = []  # unary (subscription, id, deadline)
        self.settled_event = threading.Event()

    def acknowledge(self, *, subscription: str, ack_ids: list[str]) -> None:
        self.settled.extend((subscription, ack_id, None) for ack_id in ack_ids)
        self.settled_event.set()

    def modify_ack_deadline(
        self, *, subscription: str, ack_ids: list[str], ack_deadline_seconds: int
    ) -> None:
        self.settled.extend((subscription, ack_id, ack_deadline_seconds) for ack_id in ack_ids)
        self.settled_event.set()

    def subscription_path(self, project: str, subscription: str) -> str:
        return f"projects/{project}/subscriptions/{subscription}"

    def subscribe(self, path: str, **kwargs: Any) -> Any:
        self.subscribed.append({"path": path, **kwargs})
        return _Stream()


class _Stream:
    def done(self) -> bool:
        return False

    def cancel(self) -> None:
        return None

    def result(self, timeout: float | None = None) -> None:
        return None


class _Message:
    def __init__(self, data: bytes, attributes: dict[str, str]) -> None:
        self.message_id = "m-1"
        self.ack_id = "ack-1"
        self.data = data
        self.attributes = attributes
        self.publish_time = datetime(2026, 11, 27, 12, tzinfo=UTC)
        self.acks = 0
        self.nacks = 0
        self.settled = threading.Event()

    def ack(self) -> None:
        self.acks += 1
        self.settled.set()

    def nack(self) -> None:
        self.nacks += 1
        self.settled.set()


def _router(
    tmp_path: Path, publisher: _Publisher | None = None, backoff_scale: float = 0.01
) -> tuple[EventRouter, _Publisher]:
    publisher = publisher or _Publisher()
    local = LocalCloudSettings(
        state_dir=tmp_path, repo_root=REPO_ROOT, backoff_scale=backoff_scale
    ).absolute()
    router = EventRouter(local, TOPOLOGY, _Subscriber(), publisher)
    return router, publisher


def _route(router: EventRouter, function: str) -> Route:
    return next(route for route in router.routes if route.function_name == function)


def _no_post(router: EventRouter) -> list[str]:
    posted: list[str] = []

    def post(spec: Any, request: Any) -> str:
        posted.append(spec.name)
        return ""

    router._post = post  # type: ignore[method-assign]
    return posted


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "JSONDecodeError"),
        (b'{"name": "credit/a.csv", "generation": "1"}', "no bucket"),
        (b'["credit/a.csv"]', "not an object"),
        (b'{"bucket": "cascade-landing", "name": "a.csv", "generation": "x"}', "ValueError"),
    ],
)
def test_a_malformed_storage_notification_is_dead_lettered_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: bytes, reason: str
) -> None:
    router, publisher = _router(tmp_path)
    posted = _no_post(router)
    message = _Message(data, dict(NOTIFICATION))

    with caplog.at_level(logging.INFO, logger="cascade.localcloud.router"):
        router.handle(_route(router, "validate"), message)

    assert (message.acks, message.nacks) == (1, 0)
    assert posted == []
    [(topic, body, attributes)] = publisher.published
    assert topic.endswith("/topics/cascade-dead-letter")
    assert body == data
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "1"
    assert attributes["CloudPubSubDeadLetterSourceSubscription"] == "eventarc-validate"
    assert attributes["cascade_function"] == "validate"
    assert attributes["cascade_last_error"].startswith("malformed storage notification")
    assert reason in attributes["cascade_last_error"]
    assert attributes["eventType"] == "OBJECT_FINALIZE"  # the message's own attributes kept
    assert router.stats["validate.malformed"] == 1
    assert router.stats["validate.dead_lettered"] == 1
    assert len(caplog.records) == 1


def test_a_raise_while_handling_dead_letters_instead_of_nacking(tmp_path: Path) -> None:
    router, publisher = _router(tmp_path)

    def post(spec: Any, request: Any) -> str:
        raise RuntimeError("boom")

    router._post = post  # type: ignore[method-assign]
    message = _Message(b'{"dataset": "credit"}', {"dataset": "credit"})

    router.handle(_route(router, "train"), message)

    assert (message.acks, message.nacks) == (1, 0)
    [(_, _, attributes)] = publisher.published
    assert attributes["cascade_last_error"] == "router error: RuntimeError: boom"
    assert router.stats["train.undeliverable"] == 1


def test_a_message_for_an_unknown_function_is_dead_lettered(tmp_path: Path) -> None:
    router, publisher = _router(tmp_path)
    message = _Message(b"{}", {})

    router.handle(Route("gone", "cascade-gone", "eventarc-gone"), message)

    assert (message.acks, message.nacks) == (1, 0)
    [(topic, _, attributes)] = publisher.published
    assert topic.endswith("/topics/cascade-dead-letter")
    assert attributes["cascade_last_error"] == "no function gone to route to"


def test_when_even_dead_lettering_fails_the_message_is_nacked_after_a_pause(
    tmp_path: Path,
) -> None:
    router, _ = _router(tmp_path, _Publisher(error=TimeoutError("emulator gone")))
    message = _Message(b"{not json", dict(NOTIFICATION))
    started = time.monotonic()

    router.handle(_route(router, "validate"), message)

    assert (message.acks, message.nacks) == (0, 1)
    assert time.monotonic() - started >= 0.9  # not a busy loop


def _in_thread(call: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_stopping_nacks_a_message_waiting_for_its_next_attempt(tmp_path: Path) -> None:
    router, publisher = _router(tmp_path, backoff_scale=1.0)  # 10 s before the 2nd attempt
    attempts: list[float] = []

    def post(spec: Any, request: Any) -> str:
        attempts.append(time.monotonic())
        return "HTTP 503: busy"

    router._post = post  # type: ignore[method-assign]
    subscriber = router._subscriber
    assert isinstance(subscriber, _Subscriber)
    message = _Message(b'{"dataset": "credit"}', {"dataset": "credit"})
    handling = _in_thread(lambda: router.handle(_route(router, "train"), message))
    assert wait_until(lambda: bool(attempts), timeout=5, interval=0.01), (
        "the first attempt never happened"
    )

    stopped_at = time.monotonic()
    router.stop(grace_s=5)

    assert subscriber.settled_event.wait(1)
    assert time.monotonic() - stopped_at < 2
    # nacked with a unary call (the cancelled stream's own nack would never be sent)
    assert subscriber.settled == [
        ("projects/cascade-local/subscriptions/eventarc-train", "ack-1", 0)
    ]
    assert (message.acks, message.nacks) == (0, 0)
    assert len(attempts) == 1
    assert publisher.published == []
    handling.join(1)


def test_a_message_arriving_while_stopping_is_nacked_undelivered(tmp_path: Path) -> None:
    router, _ = _router(tmp_path)
    subscriber = router._subscriber
    assert isinstance(subscriber, _Subscriber)
    posted = _no_post(router)
    router.stop(grace_s=0)
    message = _Message(b'{"dataset": "credit"}', {"dataset": "credit"})

    router.handle(_route(router, "train"), message)

    assert posted == []
    assert [(ack_id, deadline) for _, ack_id, deadline in subscriber.settled] == [("ack-1", 0)]


def test_a_delivery_ending_while_stopping_is_acknowledged_directly(tmp_path: Path) -> None:
    router, _ = _router(tmp_path)
    subscriber = router._subscriber
    assert isinstance(subscriber, _Subscriber)
    release = threading.Event()

    def post(spec: Any, request: Any) -> str:
        release.wait(5)
        return ""

    router._post = post  # type: ignore[method-assign]
    message = _Message(b'{"dataset": "credit"}', {"dataset": "credit"})
    handling = _in_thread(lambda: router.handle(_route(router, "train"), message))
    stopping = _in_thread(lambda: router.stop(grace_s=5))
    assert router._stopping.wait(5)

    release.set()
    handling.join(5)
    stopping.join(5)

    assert [(ack_id, deadline) for _, ack_id, deadline in subscriber.settled] == [("ack-1", None)]
    assert router.stats["train.delivered"] == 1


def test_streams_lease_messages_for_the_short_ack_deadline(tmp_path: Path) -> None:
    """A killed router's messages come back STREAM_ACK_DEADLINE_S after its last lease
    extension, not after the client library's default 60 s stream deadline; the library
    never shortens the lease below it (it leaves 10% of it to renew in)."""
    router, _ = _router(tmp_path)
    subscriber = router._subscriber
    assert isinstance(subscriber, _Subscriber)

    router.start()

    assert len(subscriber.subscribed) == len(router.routes)
    for subscription in subscriber.subscribed:
        flow = subscription["flow_control"]
        assert flow.min_duration_per_lease_extension == STREAM_ACK_DEADLINE_S
        assert flow.max_duration_per_lease_extension == STREAM_ACK_DEADLINE_S <= 30
        train = TOPOLOGY.functions["train"]
        assert flow.max_lease_duration >= train.retry.max_delivery_attempts * train.timeout_s


def _copy_of(message: _Message, ack_id: str) -> _Message:
    """The emulator's redelivery of ``message``: the same message id, a new ack id."""
    copy = _Message(message.data, dict(message.attributes))
    copy.ack_id = ack_id
    return copy


def _blocked_posts(router: EventRouter, answer: str = "") -> tuple[list[str], threading.Event]:
    posted: list[str] = []
    release = threading.Event()

    def post(spec: Any, request: Any) -> str:
        posted.append(spec.name)
        release.wait(5)
        return answer

    router._post = post  # type: ignore[method-assign]
    return posted, release


def test_a_copy_redelivered_during_a_delivery_is_held_and_acknowledged_with_it(
    tmp_path: Path,
) -> None:
    router, _ = _router(tmp_path)
    posted, release = _blocked_posts(router)
    route = _route(router, "transform")
    first = _Message(b'{"dataset": "credit"}', {"dataset": "credit"})
    handling = _in_thread(lambda: router.handle(route, first))
    assert wait_until(lambda: bool(posted), timeout=5, interval=0.01)

    copies = [_copy_of(first, f"ack-{n}") for n in (2, 3)]
    for copy in copies:
        router.handle(route, copy)  # returns at once: held, not posted
    assert [(copy.acks, copy.nacks) for copy in copies] == [(0, 0), (0, 0)]
    release.set()
    handling.join(5)

    assert posted == ["transform"]
    assert (first.acks, first.nacks) == (1, 0)
    assert [(copy.acks, copy.nacks) for copy in copies] == [(1, 0), (1, 0)]
    assert router.stats["transform.copies_held"] == 2
    assert router.stats["transform.delivered"] == 1

    later = _copy_of(first, "ack-4")  # after the delivery: a delivery of its own
    release.set()
    router.handle(route, later)
    assert posted == ["transform", "transform"]
    assert (later.acks, later.nacks) == (1, 0)


def test_copies_held_during_a_delivery_that_is_nacked_are_nacked_with_it(
    tmp_path: Path,
) -> None:
    router, _ = _router(tmp_path, backoff_scale=1.0)  # 10 s before a 2nd attempt
    posted, release = _blocked_posts(router, answer="HTTP 503: busy")
    route = _route(router, "train")
    subscriber = router._subscriber
    assert isinstance(subscriber, _Subscriber)
    first = _Message(b'{"dataset": "credit"}', {"dataset": "credit"})
    handling = _in_thread(lambda: router.handle(route, first))
    assert wait_until(lambda: bool(posted), timeout=5, interval=0.01)
    copy = _copy_of(first, "ack-2")
    router.handle(route, copy)
    release.set()

    router.stop(grace_s=5)  # during the backoff: the delivery is nacked
    handling.join(5)

    assert posted == ["train"]
    assert sorted((ack_id, deadline) for _, ack_id, deadline in subscriber.settled) == [
        ("ack-1", 0),
        ("ack-2", 0),
    ]
    assert router._copies == {}


def test_copies_of_different_subscriptions_are_delivered_each(tmp_path: Path) -> None:
    router, _ = _router(tmp_path)
    posted, release = _blocked_posts(router)
    release.set()
    first = _Message(b'{"dataset": "credit"}', {"dataset": "credit"})

    router.handle(_route(router, "transform"), first)
    router.handle(_route(router, "monitor"), _copy_of(first, "ack-2"))

    assert sorted(posted) == ["monitor", "transform"]
    assert router.stats["transform.copies_held"] == router.stats["monitor.copies_held"] == 0


def test_a_message_id_is_recorded_before_its_delivery(tmp_path: Path) -> None:
    """The emulator's ids must not come round again after its restart: the router has a
    message's id on disk (cascade.localcloud.message_ids) before the function sees it."""
    router, _ = _router(tmp_path)
    floor_at_post: list[int] = []

    def post(spec: Any, request: Any) -> str:
        floor_at_post.append(recorded_floor(tmp_path))
        return ""

    router._post = post  # type: ignore[method-assign]
    message = _Message(b'{"dataset": "credit"}', {"dataset": "credit"})
    message.message_id = "7031"

    router.handle(_route(router, "train"), message)

    assert len(floor_at_post) == 1
    assert floor_at_post[0] >= 7031


def test_a_delivery_waits_for_an_instance_and_then_the_function_s_timeout(
    tmp_path: Path,
) -> None:
    """A function whose instances are all busy holds a request up to the pending window
    before its own timeout starts; the router waits out both, so a slow answer is not
    counted as a failed delivery (and delivered again) while the function still runs."""
    router, _ = _router(tmp_path)
    sent: list[float] = []

    class _Answer:
        status_code = 200
        text = ""

    def post(url: str, **options: Any) -> _Answer:
        sent.append(options["timeout"])
        return _Answer()

    router._http.post = post  # type: ignore[method-assign]
    validate = TOPOLOGY.functions["validate"]

    assert router._post(validate, CloudEventRequest(path="/", headers={}, body=b"{}")) == ""
    assert sent == [PENDING_S + validate.timeout_s + 5]
