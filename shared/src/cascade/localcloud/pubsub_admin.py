"""Creating the topics and subscriptions of the topology (local cloud only).

Subscriptions are created before anything can publish, so no event is published into
a topic that nobody is subscribed to yet. Creating what exists is a no-op.
"""

from __future__ import annotations

import contextlib

import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions as gexc

from cascade.core.settings import Settings
from cascade.core.topology import StorageTrigger, TopicTrigger, Topology

__all__ = ["ACK_DEADLINE_S", "ARCHIVED_TOPICS", "Route", "provision_pubsub", "routes_of"]

# The subscriptions' ack deadline, Pub/Sub's minimum; the router's streams ask their own
# (router.STREAM_ACK_DEADLINE_S) and extend the lease of a message while they deliver it.
ACK_DEADLINE_S = 10
ARCHIVED_TOPICS = ("alerts", "dead-letter")  # kept for people and tests to read


class Route:
    """One Eventarc trigger: a subscription whose messages go to a function's URL."""

    def __init__(self, function_name: str, topic_id: str, subscription_id: str) -> None:
        self.function_name = function_name
        self.topic_id = topic_id
        self.subscription_id = subscription_id


def routes_of(topology: Topology, settings: Settings, notifications_topic: str) -> list[Route]:
    routes = []
    for spec in topology.event_functions():
        if isinstance(spec.trigger, StorageTrigger):
            topic_id = notifications_topic
        elif isinstance(spec.trigger, TopicTrigger):
            topic_id = settings.topic_id(spec.trigger.topic)
        else:  # pragma: no cover - event_functions() excludes http
            continue
        routes.append(Route(spec.name, topic_id, f"eventarc-{spec.name}"))
    return routes


def archive_subscription_id(settings: Settings, topic: str) -> str:
    return f"{settings.topic_id(topic)}-archive"


def provision_pubsub(
    topology: Topology,
    settings: Settings,
    notifications_topic: str,
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
) -> None:
    topic_ids = [settings.topic_id(name) for name in topology.topics] + [notifications_topic]
    for topic_id in topic_ids:
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(name=f"projects/{settings.project}/topics/{topic_id}")
    subscriptions = [
        (r.topic_id, r.subscription_id) for r in routes_of(topology, settings, notifications_topic)
    ]
    subscriptions += [
        (settings.topic_id(t), archive_subscription_id(settings, t)) for t in ARCHIVED_TOPICS
    ]
    for topic_id, subscription_id in subscriptions:
        with contextlib.suppress(gexc.AlreadyExists):
            subscriber.create_subscription(
                request={
                    "name": f"projects/{settings.project}/subscriptions/{subscription_id}",
                    "topic": f"projects/{settings.project}/topics/{topic_id}",
                    "ack_deadline_seconds": ACK_DEADLINE_S,
                }
            )
