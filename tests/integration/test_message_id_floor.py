"""The supervisor's move of the real Pub/Sub emulator's message ids past a floor.

The emulator numbers messages with one counter for all topics, from 1 after every start
(``cascade.localcloud.message_ids``); ``advance_past`` must leave every later message,
on any topic, numbered above the floor, and cost one message when it already is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest
from google.pubsub_v1 import PublisherClient, PubsubMessage
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.message_ids import PUBLISH_MAX, advance_past
from tests.conftest import started_emulators

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloudSettings]:
    with started_emulators(tmp_path_factory.mktemp("message-id-floor"), ("pubsub",)) as local:
        yield local


def _publish(local: LocalCloudSettings, topic_id: str) -> int:
    client = PublisherClient(
        transport=PublisherGrpcTransport(channel=grpc.insecure_channel(local.pubsub_host))
    )
    topic = f"projects/{local.project}/topics/{topic_id}"
    client.create_topic(name=topic)
    [message_id] = client.publish(topic=topic, messages=[PubsubMessage(data=b"x")]).message_ids
    return int(message_id)


def test_every_later_message_on_any_topic_is_numbered_above_the_floor(
    emulator: LocalCloudSettings,
) -> None:
    first = _publish(emulator, "before-the-advance")
    assert first < 2_500  # a fresh emulator numbers from 1

    last = advance_past(emulator.pubsub_host, emulator.project, 2_500)

    assert last > 2_500
    assert _publish(emulator, "after-the-advance") == last + 1


def test_a_counter_already_past_the_floor_costs_one_message(
    emulator: LocalCloudSettings,
) -> None:
    before = _publish(emulator, "already-past")
    assert advance_past(emulator.pubsub_host, emulator.project, 10) == before + 1


def test_a_floor_past_the_limit_is_logged_not_waited_on(
    emulator: LocalCloudSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A record claiming more ids than one start moves (a corrupt file, say 10^17) must
    not hold ``cascade up`` for ever: the move stops at the limit and says so."""
    before = _publish(emulator, "past-the-limit")

    with caplog.at_level(logging.ERROR, logger="cascade.localcloud.message_ids"):
        last = advance_past(emulator.pubsub_host, emulator.project, 10**17, limit=2_500)

    assert before + 2_500 < last <= before + 2_500 + PUBLISH_MAX
    [record] = caplog.records
    assert "reach 100000000000000000" in record.getMessage()
