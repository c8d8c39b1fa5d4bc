"""The event router: Eventarc and Pub/Sub push for the local cloud.

For every event-triggered function of the topology it streams the function's
subscription and POSTs each message to the function the way Google Cloud would
(``FunctionSpec.delivery``, the rule infra/locals.tf applies): a binary-mode CloudEvent
for Eventarc triggers (storage, and topics that do not retry), the raw wrapped push
body for the Terraform-owned push subscriptions (topics that retry). The status codes
Pub/Sub push counts as success (102, 200, 201, 202, 204) acknowledge the message.
Anything else is retried with the topology's exponential backoff (scaled by
``backoff_scale``) until ``max_delivery_attempts``; then the message is published to
the dead-letter topic with the attributes Pub/Sub itself adds to dead letters, logged,
and acknowledged.

A message is acknowledged only after it was delivered or dead-lettered, so a router
that dies mid-retry loses nothing: the emulator redelivers after the ack deadline. That
deadline is short (``STREAM_ACK_DEADLINE_S``; the client library extends the lease of a
message being handled for as long as its delivery may take), so what a killed router
held reaches its successor within half a minute. A router told to stop (SIGTERM) nacks what it
has not delivered yet, so its successor gets it at once.

A copy of a message that this router is still delivering (the emulator redelivers it when
a lease extension comes late, as on a loaded machine: the leases are short, see above) is
not posted again: it is held and settled with the delivery under way, acknowledged or
nacked with it. Each copy has its own ack id and the emulator honours only the newest, so
settling every copy is what removes the message. Google's push holds a message while its
request is outstanding, up to the subscription's ack deadline (infra/pubsub.tf sets it to
the function's timeout), so posting such copies would add duplicates that Google does
not send, and on two shared cores each one lengthens the queue that made the lease late.

A message that cannot be turned into a request (a storage notification whose data is not
an object resource) is dead-lettered at once with the reason: no redelivery can fix it.
The callback never raises: the client library nacks a message whose callback raised, and
the emulator redelivers a nacked message at once, so a raise is a busy loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import google.cloud.pubsub_v1 as pubsub_v1
import requests
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

from cascade.core.clients import make_publisher, make_subscriber
from cascade.core.grants import INVOKER_ACCOUNT, service_account_email
from cascade.core.settings import Settings
from cascade.core.topology import FunctionSpec, StorageTrigger, Topology, load_topology
from cascade.localcloud.eventarc import (
    CloudEventRequest,
    message_published_event,
    object_finalized_event,
    pubsub_push_request,
)
from cascade.localcloud.function_host import answer_within_s
from cascade.localcloud.id_tokens import TOKEN_LIFETIME_S, LocalIdTokens
from cascade.localcloud.local_settings import LOOPBACK, LocalCloudSettings
from cascade.localcloud.message_ids import SeenIds, ids_file
from cascade.localcloud.pubsub_admin import ACK_DEADLINE_S, Route, routes_of

__all__ = [
    "ACK_STATUS_CODES",
    "STREAM_ACK_DEADLINE_S",
    "EventRouter",
    "MalformedMessageError",
    "main",
    "request_for",
]

_log = logging.getLogger("cascade.localcloud.router")

# What Pub/Sub push (and so Eventarc, which pushes through Pub/Sub) counts as an ack.
ACK_STATUS_CODES = frozenset({102, 200, 201, 202, 204})

# The ack deadline of the router's streams, and of each lease extension (the library's
# minimum and maximum both, so that it never shortens it). The client library renews a
# lease at a random moment within 90% of it: a 10 s lease (the subscriptions' own,
# Pub/Sub's minimum) left a second to spare, which a router juggling every subscription
# on two loaded cores missed, and each missed renewal redelivered a message mid-delivery.
# A message leased to a router that was killed is redelivered this long after its last
# extension (the library's default stream deadline, 60 s, held train requests back for
# minutes after a router restart).
STREAM_ACK_DEADLINE_S = 3 * ACK_DEADLINE_S


class MalformedMessageError(ValueError):
    """A message that no delivery attempt can turn into the request Google would send."""


class ReceivedMessage(Protocol):
    """The parts of a pulled Pub/Sub message that a delivery is built from."""

    @property
    def message_id(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def attributes(self) -> Any: ...
    @property
    def publish_time(self) -> datetime: ...


def request_for(
    spec: FunctionSpec,
    route: Route,
    message: ReceivedMessage,
    settings: Settings,
    delivery_attempt: int,
) -> CloudEventRequest | None:
    """The POST Google Cloud would send ``spec`` for ``message``; None to skip it
    (a storage notification that is not a finalize in the trigger's bucket)."""
    if isinstance(spec.trigger, StorageTrigger):
        attributes = message.attributes
        bucket = settings.bucket_for(spec.trigger.bucket)
        if attributes.get("eventType") != "OBJECT_FINALIZE" or attributes.get("bucketId") != bucket:
            return None
        try:
            resource = json.loads(message.data)
            if not isinstance(resource, dict):
                raise ValueError(f"the data is JSON {type(resource).__name__}, not an object")
            missing = [key for key in ("bucket", "name") if not resource.get(key)]
            if missing:
                raise ValueError(f"the object resource has no {' or '.join(missing)}")
            return object_finalized_event(
                message_id=message.message_id,
                object_resource=resource,
                fallback_time=message.publish_time,
            )
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise MalformedMessageError(
                f"malformed storage notification: {type(error).__name__}: {error}"
            ) from error
    fields: dict[str, Any] = {
        "project": settings.project,
        "topic_id": route.topic_id,
        "subscription_id": route.subscription_id,
        "message_id": message.message_id,
        "data": bytes(message.data),
        "attributes": dict(message.attributes),
        "publish_time": message.publish_time,
    }
    if spec.delivery == "push":
        # Every Terraform-owned push subscription has a dead-letter policy, so Pub/Sub
        # puts the delivery attempt in the body.
        return pubsub_push_request(**fields, delivery_attempt=delivery_attempt)
    return message_published_event(**fields)


class EventRouter:
    def __init__(
        self,
        local: LocalCloudSettings,
        topology: Topology,
        subscriber: pubsub_v1.SubscriberClient,
        publisher: pubsub_v1.PublisherClient,
    ) -> None:
        self._local = local
        self._settings: Settings = local.runtime_settings()
        self._seen_ids = SeenIds(ids_file(local.state_dir, "router"))
        self._topology = topology
        self._subscriber = subscriber
        self._publisher = publisher
        self._http = requests.Session()
        self._tokens = LocalIdTokens(local.id_token_key_file)
        self._invoker = service_account_email(INVOKER_ACCOUNT, self._settings)
        self._bearers: dict[str, tuple[str, float]] = {}
        self._bearers_lock = threading.Lock()
        self._streams: dict[str, Any] = {}
        self.stats: Counter[str] = Counter(_load_stats(local))
        self._stats_lock = threading.Lock()
        self._stats_saved: dict[str, int] = dict(self.stats)
        self.routes = routes_of(topology, self._settings, local.notifications_topic)
        self.urls = function_urls(local, topology)
        self._stopping = threading.Event()
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._copies: dict[tuple[str, str], tuple[Message, list[Message]]] = {}
        """Per (subscription, message id) being delivered: that delivery's message and the
        copies received meanwhile."""
        self._copies_lock = threading.Lock()

    def start(self) -> None:
        for route in self.routes:
            self._subscribe(route)

    def _subscribe(self, route: Route) -> None:
        path = self._subscriber.subscription_path(self._settings.project, route.subscription_id)
        self._streams[route.subscription_id] = self._subscriber.subscribe(
            path,
            callback=lambda message, route=route: self.handle(route, message),
            flow_control=pubsub_v1.types.FlowControl(
                max_messages=16,
                # Lease extensions of STREAM_ACK_DEADLINE_S each (so the stream's deadline
                # too), for as long as a delivery with all its retries may take.
                min_duration_per_lease_extension=STREAM_ACK_DEADLINE_S,
                max_duration_per_lease_extension=STREAM_ACK_DEADLINE_S,
                max_lease_duration=self._longest_handling_s(),
            ),
            # One pool per stream: a stream that ends shuts its scheduler's pool down.
            scheduler=ThreadScheduler(
                ThreadPoolExecutor(max_workers=16, thread_name_prefix=route.subscription_id)
            ),
        )

    def _longest_handling_s(self) -> float:
        """The longest ``handle`` may hold a message: every attempt timing out, with backoff."""
        longest = 0.0
        for route in self.routes:
            spec = self._topology.functions[route.function_name]
            attempts = spec.retry.max_delivery_attempts
            # A connection error posts twice.
            posts = attempts * 2 * (answer_within_s(spec.timeout_s) + 5)
            backoff = sum(spec.retry.backoff_s(n) for n in range(1, attempts))
            longest = max(longest, posts + backoff * self._local.backoff_scale)
        return max(longest + 60.0, 3600.0)

    def resubscribe_ended_streams(self) -> int:
        """Open again every stream that ended (emulator restart, subscription recreated)."""
        ended = [r for r in self.routes if self._streams[r.subscription_id].done()]
        for route in ended:
            _log.warning("stream of %s ended; subscribing again", route.subscription_id)
            self._subscribe(route)
        return len(ended)

    def healthy(self) -> bool:
        return bool(self._streams) and not any(s.done() for s in self._streams.values())

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop streaming. What the router holds but has not delivered is nacked now, so
        the next router delivers it at once, not after the ack deadline; deliveries under
        way get ``grace_s`` to end (and are acknowledged)."""
        deadline = time.monotonic() + grace_s
        self._stopping.set()
        for stream in self._streams.values():
            stream.cancel()  # the library nacks what it received but had not dispatched
        with self._in_flight_changed:
            self._in_flight_changed.wait_for(
                lambda: self._in_flight == 0, timeout=max(deadline - time.monotonic(), 0.0)
            )
        for stream in self._streams.values():
            with contextlib.suppress(Exception):
                stream.result(timeout=max(deadline - time.monotonic(), 0.0))

    def _ack(self, route: Route, message: Message) -> None:
        self._settle(route, message, ack=True)

    def _nack(self, route: Route, message: Message) -> None:
        self._settle(route, message, ack=False)

    def _settle(self, route: Route, message: Message, *, ack: bool) -> None:
        """Ack or nack ``message`` and the copies held while it was delivered."""
        for copy in self._settled_copies(route, message):
            if self._stopping.is_set():
                self._settle_directly(route, copy, ack=ack)
            elif ack:
                copy.ack()
            else:
                copy.nack()

    def _hold_if_delivering(self, route: Route, message: Message) -> bool:
        """True when a copy of ``message`` is being delivered here: this one is held, to
        be settled with it. Else this delivery is the one copies wait for."""
        key = (route.subscription_id, message.message_id)
        with self._copies_lock:
            delivering = self._copies.get(key)
            if delivering is None:
                self._copies[key] = (message, [])
                return False
            delivering[1].append(message)
        self.count(f"{route.function_name}.copies_held")
        return True

    def _settled_copies(self, route: Route, message: Message) -> list[Message]:
        """``message`` and, when its delivery is the one copies wait for, the copies held
        meanwhile (none is held after)."""
        key = (route.subscription_id, message.message_id)
        with self._copies_lock:
            delivering = self._copies.get(key)
            if delivering is None or delivering[0] is not message:
                return [message]
            del self._copies[key]
        return [message, *delivering[1]]

    def _settle_directly(self, route: Route, message: Message, *, ack: bool) -> None:
        """Ack or nack with a unary call: a cancelled stream's own acks are never sent."""
        path = self._subscriber.subscription_path(self._settings.project, route.subscription_id)
        try:
            if ack:
                self._subscriber.acknowledge(subscription=path, ack_ids=[message.ack_id])
            else:
                self._subscriber.modify_ack_deadline(
                    subscription=path, ack_ids=[message.ack_id], ack_deadline_seconds=0
                )
        except Exception as error:  # noqa: BLE001 - it comes back after the ack deadline
            _log.warning("cannot settle message %s while stopping: %s", message.message_id, error)

    def count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def save_stats(self) -> None:
        """Keep the counters in the state folder, so a restarted router goes on counting."""
        with self._stats_lock:
            current = dict(self.stats)
        if current == self._stats_saved:
            return
        path = stats_path(self._local)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(current))
        temporary.replace(path)
        self._stats_saved = current

    def handle(self, route: Route, message: Message) -> None:
        """Deliver one message with retries; ack once delivered or dead-lettered.

        Never raises (see the module's docstring): what cannot be delivered for a reason
        no retry fixes is dead-lettered at once.
        """
        if self._hold_if_delivering(route, message):
            return
        with self._in_flight_changed:
            self._in_flight += 1
        try:
            # Before any effect: the emulator's ids must not come round again after its
            # restart (cascade.localcloud.message_ids).
            self._seen_ids.saw(message.message_id)
            self._handle(route, message)
        except Exception as error:  # noqa: BLE001 - a raise here would nack into a busy loop
            self._undeliverable(route, message, f"router error: {type(error).__name__}: {error}")
        finally:
            # Every path above settles the delivery; should one not, its copies are
            # nacked (redelivered), never held for ever.
            for copy in self._settled_copies(route, message)[1:]:
                copy.nack()
            with self._in_flight_changed:
                self._in_flight -= 1
                self._in_flight_changed.notify_all()

    def _handle(self, route: Route, message: Message) -> None:
        if self._stopping.is_set():
            self._nack(route, message)  # the next router delivers it
            return
        spec = self._topology.functions.get(route.function_name)
        if spec is None or spec.name not in self.urls:
            self._undeliverable(route, message, f"no function {route.function_name} to route to")
            return
        attempts, error = 0, ""
        while True:
            attempts += 1
            try:
                request = request_for(spec, route, message, self._settings, attempts)
            except MalformedMessageError as malformed:
                self.count(f"{spec.name}.malformed")
                self._dead_letter(route, spec, message, attempts, str(malformed))
                self._ack(route, message)
                return
            if request is None:
                self._ack(route, message)
                return
            error = self._post(spec, request)
            if not error:
                self.count(f"{spec.name}.delivered")
                self._ack(route, message)
                return
            self.count(f"{spec.name}.failed_attempts")
            _log.warning(
                "%s: delivery %d of %s failed: %s", spec.name, attempts, message.message_id, error
            )
            if spec.retry.policy == "do_not_retry" or attempts >= spec.retry.max_delivery_attempts:
                break
            if self._stopping.wait(spec.retry.backoff_s(attempts) * self._local.backoff_scale):
                self._nack(route, message)  # stopping: the next router starts its attempts again
                return
        self._dead_letter(route, spec, message, attempts, error)
        self._ack(route, message)

    def _undeliverable(self, route: Route, message: Message, reason: str) -> None:
        """Dead-letter ``message`` at once with ``reason``, to the topology's dead-letter
        topic when its function is unknown. If even that fails, nack it after a pause
        (the emulator redelivers a nacked message at once)."""
        spec = self._topology.functions.get(route.function_name)
        name = spec.name if spec is not None else route.function_name
        self.count(f"{name}.undeliverable")
        try:
            topic = (
                spec.dead_letters_to
                if spec is not None
                else self._topology.defaults.dead_letter_topic
            )
            self._dead_letter_to(topic, route, name, message, 1, reason)
            self._ack(route, message)
        except Exception as error:  # noqa: BLE001 - logged; the message is nacked below
            _log.error(
                "%s: cannot dead-letter message %s (%s): %s",
                name,
                message.message_id,
                reason,
                error,
            )
            self._stopping.wait(max(1.0, 10 * self._local.backoff_scale))
            self._nack(route, message)

    def _post(self, spec: FunctionSpec, request: CloudEventRequest) -> str:
        """POST the event; the empty string on 2xx, else what went wrong.

        A connection error is tried once more at once, on a new connection, within the
        same delivery attempt: functions-framework's gunicorn closes idle keep-alive
        connections after 2 s, and a POST racing that close never reaches the function.
        Sending it again is at worst a duplicate delivery, which every step absorbs.
        """
        for connection_attempt in (1, 2):
            try:
                response = self._http.post(
                    self.urls[spec.name].rstrip("/") + request.path,
                    headers={**request.headers, "Authorization": self._bearer(spec.name)},
                    data=request.body,
                    # Waiting for an instance, then the function's own timeout.
                    timeout=answer_within_s(spec.timeout_s) + 5,
                )
                break
            except requests.ConnectionError as error:
                if connection_attempt == 2:
                    return f"{type(error).__name__}: {error}"
            except requests.RequestException as error:
                return f"{type(error).__name__}: {error}"
        if response.status_code in ACK_STATUS_CODES:
            return ""
        return f"HTTP {response.status_code}: {response.text[:300]}"

    def _bearer(self, function: str) -> str:
        """The invoker account's ID token for ``function``'s URL, as Eventarc and Pub/Sub
        push send it (``oidc_token``): minted again once half its hour is gone."""
        now = time.time()
        with self._bearers_lock:
            token, minted = self._bearers.get(function, ("", 0.0))
            if now - minted > TOKEN_LIFETIME_S / 2:
                token = self._tokens.mint(self._invoker, self.urls[function], now=now)
                self._bearers[function] = (token, now)
        return f"Bearer {token}"

    def _dead_letter(
        self, route: Route, spec: FunctionSpec, message: Message, attempts: int, error: str
    ) -> None:
        self._dead_letter_to(spec.dead_letters_to, route, spec.name, message, attempts, error)

    def _dead_letter_to(
        self,
        dead_letter_topic: str | None,
        route: Route,
        function_name: str,
        message: Message,
        attempts: int,
        error: str,
    ) -> None:
        if dead_letter_topic is None:  # the dead-letter consumer itself: do not loop
            self.count(f"{function_name}.dropped")
            _log.error("%s: gave up on message %s: %s", function_name, message.message_id, error)
            return
        topic = self._settings.topic_path(dead_letter_topic)
        attributes = {
            **message.attributes,
            "CloudPubSubDeadLetterSourceDeliveryCount": str(attempts),
            "CloudPubSubDeadLetterSourceSubscription": route.subscription_id,
            "CloudPubSubDeadLetterSourceSubscriptionProject": self._settings.project,
            # As Pub/Sub writes it: "2022-08-12T15:56:29.732+00:00".
            "CloudPubSubDeadLetterSourceTopicPublishTime": message.publish_time.astimezone(
                UTC
            ).isoformat(timespec="milliseconds"),
            "cascade_function": function_name,
            "cascade_last_error": error[:1000],
        }
        self._publisher.publish(topic, message.data, **attributes).result(timeout=30)
        self.count(f"{function_name}.dead_lettered")
        _log.error(
            "%s: message %s dead-lettered after %d attempts: %s",
            function_name,
            message.message_id,
            attempts,
            error,
        )


def stats_path(local: LocalCloudSettings) -> Path:
    return local.state_dir / "router-stats.json"


def _load_stats(local: LocalCloudSettings) -> dict[str, int]:
    try:
        saved = json.loads(stats_path(local).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(key): int(value) for key, value in saved.items()}


def function_ports(local: LocalCloudSettings, topology: Topology) -> dict[str, int]:
    """Each function's local port: the topology's order, counted from the base port."""
    return {name: local.functions_base_port + i for i, name in enumerate(topology.functions)}


def function_urls(local: LocalCloudSettings, topology: Topology) -> dict[str, str]:
    return {
        name: f"http://{LOOPBACK}:{port}/" for name, port in function_ports(local, topology).items()
    }


class _HealthHandler(BaseHTTPRequestHandler):
    router: EventRouter

    def do_GET(self) -> None:
        if self.path == "/healthz":
            healthy = self.router.healthy()
            self._reply(200 if healthy else 503, {"healthy": healthy})
        elif self.path == "/stats":
            self._reply(200, dict(self.router.stats))
        else:
            self._reply(404, {"error": "not found"})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format='{"severity": "%(levelname)s", "message": "%(message)s", '
        '"time": "%(asctime)s", "logger": "%(name)s"}',
    )
    local = LocalCloudSettings().absolute()
    router = EventRouter(
        local,
        load_topology(local.topology_file),
        make_subscriber(local.runtime_settings()),
        make_publisher(local.runtime_settings()),
    )
    router.start()
    handler = type("Handler", (_HealthHandler,), {"router": router})
    server = ThreadingHTTPServer((LOOPBACK, local.router_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    _log.info("routing %d triggers at %s", len(router.routes), datetime.now(UTC).isoformat())
    while not stopping.wait(0.5):
        router.save_stats()
        if router.resubscribe_ended_streams():
            stopping.wait(1.0)  # back off while the emulator or a subscription is missing
    router.stop()
    router.save_stats()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
