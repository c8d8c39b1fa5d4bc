"""Pub/Sub message ids that stay unique across the emulator's restarts (local cloud only).

Pub/Sub assigns each message an id "guaranteed to be unique within the topic"
(``PubsubMessage.message_id``), and Cascade relies on it: a stream's records are
deduplicated by message id across every file of a snapshot (``cascade.transform``), and
a dead letter is stored under its message's id. The emulator numbers messages from 1
with one counter for all topics and keeps nothing across a restart (checked on this
machine: ids 1, 2, 3 over two topics; 1 again after a restart). Its ids after a restart,
or after ``cascade down`` and ``up`` with the buckets kept, would repeat ids that landed
files and dead-letter records already hold, and a new record would be dropped as a
duplicate of an old one.

So the processes that act on messages (the event router and the streams' Cloud Storage
writer) record the highest id they have seen before acting on it, each in its own file
of the state directory, reserving ids in blocks so that a file is written once per
:data:`BLOCK` ids rather than once per message. Before the emulator's topics are
provisioned (at ``cascade up`` and after each restart, so nothing else can publish yet)
the supervisor publishes to a topic of its own, which has no subscription, until the
emulator's counter is past every recorded id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path

import grpc
from google.api_core import exceptions as gexc
from google.pubsub_v1 import PublisherClient, PubsubMessage
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

__all__ = [
    "BLOCK",
    "FLOOR_TOPIC",
    "MAX_ADVANCE",
    "SeenIds",
    "advance_past",
    "ids_file",
    "recorded_floor",
]

_log = logging.getLogger("cascade.localcloud.message_ids")

BLOCK = 1000
"""Ids reserved per write: a file is rewritten once per this many ids."""
FLOOR_TOPIC = "cascade-local-message-id-floor"
"""The supervisor's own topic, with no subscription: what is published there is dropped."""
PUBLISH_MAX = 1000
"""Messages per publish request, the service's own limit."""
MAX_ADVANCE = 2_000_000
"""The most ids one start moves the counter by (about 30 s here): a record claiming more
(a state folder of millions of messages, or a corrupt file) is logged, never waited on."""
_PREFIX = "pubsub-ids-"


def ids_file(state_dir: Path, process: str) -> Path:
    """Where ``process`` records the ids it has seen."""
    return state_dir / f"{_PREFIX}{process}.json"


def _number(message_id: str) -> int | None:
    """The emulator's id as a number; None for any other shape (nothing to record)."""
    if not message_id.isascii() or not message_id.isdigit() or len(message_id) > 18:
        return None
    return int(message_id)


def _read(path: Path) -> int:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["reserved_through"]
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as error:
        _log.warning("ignoring %s, which is not an id record: %s", path, error)
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _log.warning("ignoring %s: reserved_through is %r, not a count", path, value)
        return 0
    return value


def recorded_floor(state_dir: Path) -> int:
    """The highest id any process has recorded (0: none)."""
    return max((_read(path) for path in state_dir.glob(f"{_PREFIX}*.json")), default=0)


class SeenIds:
    """One process's record of the ids it has seen, written before it acts on them."""

    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self._path = path
        self._block = block
        self._reserved = _read(path)
        self._lock = threading.Lock()

    @property
    def reserved_through(self) -> int:
        return self._reserved

    def saw(self, message_ids: str | list[str]) -> None:
        """Record ``message_ids`` (one or a pulled batch); returns once they are on disk."""
        ids = [message_ids] if isinstance(message_ids, str) else message_ids
        highest = max((n for n in map(_number, ids) if n is not None), default=None)
        if highest is None or highest <= self._reserved:
            return
        with self._lock:
            if highest <= self._reserved:
                return
            reserved = highest + self._block
            temporary = self._path.with_name(f".{self._path.name}.{os.getpid()}")
            temporary.write_text(json.dumps({"reserved_through": reserved}), encoding="utf-8")
            temporary.replace(self._path)
            self._reserved = reserved


def _publisher(host: str) -> PublisherClient:
    return PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(host)))


def _published(publisher: PublisherClient, topic: str, count: int) -> int | None:
    """Publish ``count`` one-byte messages; the last id assigned as a number."""
    response = publisher.publish(topic=topic, messages=[PubsubMessage(data=b"0")] * count)
    return _number(response.message_ids[-1])


def advance_past(host: str, project: str, floor: int, *, limit: int = MAX_ADVANCE) -> int:
    """Publish to :data:`FLOOR_TOPIC` until the emulator at ``host`` assigns ids above
    ``floor``, or until ``limit`` ids are spent; the last id assigned."""
    topic = f"projects/{project}/topics/{FLOOR_TOPIC}"
    publisher = _publisher(host)
    try:
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(name=topic)
        start = current = _published(publisher, topic, 1)
        target = floor if start is None else min(floor, start + limit)
        while current is not None and current <= target:
            current = _published(publisher, topic, min(PUBLISH_MAX, target - current + 1))
    finally:
        publisher.transport.close()  # type: ignore[no-untyped-call]
    if start is None or current is None:
        _log.warning("the emulator's message ids are not numbers: nothing to advance")
        return 0
    if floor > target:
        _log.error(
            "the recorded message ids reach %d, past what one start moves (%d ids): ids "
            "above %d may repeat ones already delivered; remove the state folder's "
            "pubsub-ids-*.json files only together with its buckets",
            floor,
            limit,
            current,
        )
    elif current > start:
        _log.info("advanced the emulator's message ids from %d past %d", start, floor)
    return current
