"""The local cloud's Pub/Sub Cloud Storage subscriptions (``gcs-subscriber``).

The Pub/Sub emulator stores a subscription's ``cloud_storage_config`` but never writes a
file: it serves the subscription as an ordinary pull subscription
(docs/research/ingestion-and-scale.md, 1.5). This process plays the service's writer:

- At start it creates, for each ``streams`` entry of the topology, the same resources
  ``infra/streams.tf`` creates: the Avro schema, the ingestion topic with
  ``schema_settings`` (JSON encoding: the emulator, like the service, then refuses a
  message the schema refuses, at publish), and the subscription with its
  ``cloud_storage_config`` and dead-letter policy.
- It reads each subscription back from the emulator and refuses to serve one whose
  config the service would refuse (``check_cloud_storage_config``): the emulator
  checks none of those rules.
- It pulls, batches by the three thresholds (``max_messages``, ``max_bytes``,
  ``max_duration``: a file is written when any is reached), writes one Avro object per
  batch to the bucket as ``<prefix><datetime>_<uuid><suffix>`` with the fields of
  ``avro_config.write_metadata``, and acknowledges the batch's messages only after the
  object is written: a crash between the two delivers them again, into another file,
  as the service's at-least-once delivery does (transform removes them by message id).
- A batch it cannot write (the bucket missing, the permission denied, any failed
  upload) is not acknowledged: its messages are nacked (``modify_ack_deadline`` 0), so
  Pub/Sub counts a delivery attempt (1 + nacks + expired deadlines) and delivers them
  again, into another batch; after the subscription's ``max_delivery_attempts`` the
  emulator itself forwards each to the dead-letter topic with the
  ``CloudPubSubDeadLetterSource*`` attributes, as the service does (checked against the
  emulator: ``tests/integration/test_stream_ingestion.py``). The writer keeps the
  subscription's state as the service reports it (``NOT_FOUND`` for a missing bucket,
  ``PERMISSION_DENIED`` for a refused write, ``ACTIVE`` after a written file) and waits
  1, 2, 4 ... 60 s before pulling again, so a short outage is not spent in a second.

The write is an ordinary upload, so the router's finalize notification starts validate
as for any landed file.

``stream_duration_scale`` (a local-cloud setting, tests and demos only) multiplies
``max_duration`` when timing a batch: the subscription keeps the legal value (60 s to
600 s) and a test need not wait a minute for a file. The scale never changes what is
accepted.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import fastavro  # type: ignore[import-untyped,unused-ignore]
import google.cloud.pubsub_v1 as pubsub_v1
import grpc
from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2
from google.pubsub_v1 import types as pubsub_types

from cascade.core.clients import make_publisher, make_storage_client, make_subscriber
from cascade.core.errors import InvalidConfigError
from cascade.core.paths import DatasetPaths
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.core.streams import (
    DATETIME_FORMAT,
    StreamNames,
    StreamSpec,
    check_cloud_storage_config,
    load_record_schema,
    stream_names,
)
from cascade.core.topology import Topology, load_topology
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.message_ids import SeenIds, ids_file

__all__ = [
    "ACTIVE",
    "GCS_SUBSCRIBER_STATE",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "PUBSUB_AVRO_SCHEMA",
    "Batch",
    "Message",
    "StreamWriter",
    "avro_file_bytes",
    "main",
    "object_name",
    "provision_streams",
    "subscription_request",
    "write_state",
]

_log = logging.getLogger("cascade.localcloud.gcs_subscriber")
GCS_SUBSCRIBER_STATE = "gcs-subscriber.json"
_PULL_MAX = 1000
_PULL_TIMEOUT_S = 1.0

PUBSUB_AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "PubsubMessage",
    "namespace": "google.pubsub.v1",
    "fields": [
        {"name": "subscription_name", "type": "string"},
        {"name": "message_id", "type": "string"},
        {"name": "publish_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "attributes", "type": {"type": "map", "values": "string"}},
        {"name": "data", "type": "bytes"},
    ],
}
"""The records of a Cloud Storage subscription's Avro file with ``write_metadata``.
Verified (``google.pubsub_v1.types.CloudStorageConfig.AvroConfig.write_metadata``, the
proto's own text, and gcloud's ``--cloud-storage-write-metadata`` help): "the
subscription name, message_id, and publish_time fields are put in their own fields while
all other message properties other than data (for example, an ordering_key, if present)
are added as entries in the attributes map". Not found in the references read here: the
record's name and namespace, the fields' order and exact Avro types, and the attribute
key of an ordering key, so these are the stand-in's (Cascade's publishers set no
ordering key). Readers never depend on them: they read the writer schema from the
file's header and need only a string ``message_id`` and bytes ``data``."""
_PARSED_SCHEMA = fastavro.parse_schema(PUBSUB_AVRO_SCHEMA)


@dataclass(frozen=True)
class Message:
    message_id: str
    publish_time: datetime
    attributes: dict[str, str]
    data: bytes
    ack_id: str = ""


def _datetime_text(when: datetime) -> str:
    """``when`` in UTC rendered with ``DATETIME_FORMAT`` (YYYY-MM-DD/hh_mm_ssZ)."""
    utc = when.astimezone(UTC)
    rendered = DATETIME_FORMAT
    for token, value in (
        ("YYYY", f"{utc.year:04d}"),
        ("MM", f"{utc.month:02d}"),
        ("DD", f"{utc.day:02d}"),
        ("hh", f"{utc.hour:02d}"),
        ("mm", f"{utc.minute:02d}"),
        ("ss", f"{utc.second:02d}"),
    ):
        rendered = rendered.replace(token, value, 1)
    return rendered


def object_name(names: StreamNames, when: datetime, unique: uuid.UUID) -> str:
    """``<filename_prefix><datetime>_<uuid><filename_suffix>`` (the service's naming)."""
    return f"{names.filename_prefix}{_datetime_text(when)}_{unique}{names.filename_suffix}"


def avro_file_bytes(subscription_path: str, messages: Iterable[Message]) -> bytes:
    """One Avro container file, a record per message (``write_metadata``)."""
    records = (
        {
            "subscription_name": subscription_path,
            "message_id": message.message_id,
            "publish_time": message.publish_time,
            "attributes": dict(message.attributes),
            "data": message.data,
        }
        for message in messages
    )
    buffer = io.BytesIO()
    fastavro.writer(buffer, _PARSED_SCHEMA, records)
    return buffer.getvalue()


@dataclass
class Batch:
    """The open file of one subscription: closes when any threshold is reached."""

    opened_at: float
    messages: list[Message] = field(default_factory=list)
    size: int = 0

    def add(self, message: Message) -> None:
        self.messages.append(message)
        self.size += len(message.data)

    def full(self, spec: StreamSpec) -> bool:
        """``max_messages`` or ``max_bytes`` reached (one large message may exceed it)."""
        return len(self.messages) >= spec.max_messages or self.size >= spec.max_bytes

    def expired(self, spec: StreamSpec, now: float, duration_scale: float) -> bool:
        return bool(self.messages) and now - self.opened_at >= spec.max_duration_s * duration_scale


class ObjectWriter(Protocol):
    def __call__(self, name: str, data: bytes) -> None: ...


class Puller(Protocol):
    def pull(self, request: dict[str, Any], timeout: float) -> Any: ...

    def acknowledge(self, request: dict[str, Any]) -> Any: ...

    def modify_ack_deadline(self, request: dict[str, Any]) -> Any: ...


ACTIVE = "ACTIVE"
NOT_FOUND = "NOT_FOUND"
PERMISSION_DENIED = "PERMISSION_DENIED"
_MAX_PAUSE_S = 60.0


def write_state(error: BaseException) -> str:
    """The ``CloudStorageConfig.State`` the service reports for a failed write: the
    bucket missing (404) or the write refused (401, 403); else it stays ``ACTIVE``."""
    if isinstance(error, gexc.NotFound):
        return NOT_FOUND
    if isinstance(error, gexc.Forbidden | gexc.Unauthorized | gexc.PermissionDenied):
        return PERMISSION_DENIED
    return ACTIVE


class StreamWriter:
    """Pulls one subscription, writes its batches, acknowledges after each write."""

    def __init__(
        self,
        spec: StreamSpec,
        names: StreamNames,
        project: str,
        subscriber: Puller,
        write: ObjectWriter,
        *,
        duration_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        seen: Callable[[list[str]], None] = lambda message_ids: None,
    ) -> None:
        self.spec = spec
        self.names = names
        self._subscription = names.subscription_path(project)
        self._subscriber = subscriber
        self._write = write
        self._scale = duration_scale
        self._clock = clock
        self._wall_clock = wall_clock
        self._seen = seen
        self.batch = Batch(opened_at=clock())
        self.files_written: list[str] = []
        self.messages_written = 0
        self.state = ACTIVE
        self.failed_writes = 0
        self.messages_nacked = 0
        self.last_error = ""
        self._failures_in_a_row = 0
        self._paused_until = 0.0

    def receive(self, messages: Iterable[Message]) -> None:
        """Add pulled messages; write every batch that fills up."""
        for message in messages:
            if not self.batch.messages:
                self.batch.opened_at = self._clock()
            self.batch.add(message)
            if self.batch.full(self.spec):
                self.flush()

    def tick(self) -> None:
        """Write the open batch if it has been open ``max_duration`` (scaled)."""
        if self.batch.expired(self.spec, self._clock(), self._scale):
            self.flush()

    def flush(self) -> None:
        batch = self.batch
        if not batch.messages:
            return
        name = object_name(self.names, self._wall_clock(), uuid.uuid4())
        try:
            self._write(name, avro_file_bytes(self._subscription, batch.messages))
        except Exception as error:  # noqa: BLE001 - any failed upload: nack, as the service
            self._write_failed(name, batch, error)
            return
        self.state = ACTIVE
        self._failures_in_a_row = 0
        # Written: the batch is closed whatever the acknowledgement does. A failed one
        # leaves the messages to come again after their deadline, into another file
        # (at least once, as the service); it never writes this batch again.
        self.files_written.append(name)
        self.messages_written += len(batch.messages)
        self.batch = Batch(opened_at=self._clock())
        _log.info("wrote %s: %d messages, %d bytes", name, len(batch.messages), batch.size)
        ack_ids = [message.ack_id for message in batch.messages if message.ack_id]
        try:
            for start in range(0, len(ack_ids), _PULL_MAX):
                self._subscriber.acknowledge(
                    request={
                        "subscription": self._subscription,
                        "ack_ids": ack_ids[start : start + _PULL_MAX],
                    }
                )
        except gexc.GoogleAPICallError as error:
            _log.warning("%s: acknowledging failed (redelivered later): %s", name, error)

    def _write_failed(self, name: str, batch: Batch, error: Exception) -> None:
        """Nack the batch (a failed delivery each: Pub/Sub delivers the messages again,
        and forwards them to the dead-letter topic after ``max_delivery_attempts``), keep
        the subscription's state, and pause before the next pull."""
        self.batch = Batch(opened_at=self._clock())
        self.state = write_state(error)
        self.failed_writes += 1
        self.last_error = f"{type(error).__name__}: {error}"[:1000]
        self._failures_in_a_row += 1
        pause = min(_MAX_PAUSE_S, 2.0 ** (self._failures_in_a_row - 1))
        self._paused_until = self._clock() + pause
        _log.warning(
            "%s: cannot write %s (%s, state %s): %d messages nacked, next pull in %.0f s",
            self.names.subscription_id,
            name,
            self.last_error,
            self.state,
            len(batch.messages),
            pause,
        )
        ack_ids = [message.ack_id for message in batch.messages if message.ack_id]
        try:
            for start in range(0, len(ack_ids), _PULL_MAX):
                self._subscriber.modify_ack_deadline(
                    request={
                        "subscription": self._subscription,
                        "ack_ids": ack_ids[start : start + _PULL_MAX],
                        "ack_deadline_seconds": 0,
                    }
                )
            self.messages_nacked += len(ack_ids)
        except gexc.GoogleAPICallError as nack_error:
            # Not nacked: the messages come again once their ack deadline passes (an
            # expired deadline is a failed delivery too).
            _log.warning("%s: nacking failed: %s", name, nack_error)

    def paused_for(self) -> float:
        """Seconds until the writer pulls again after a failed write (0: it pulls)."""
        return max(0.0, self._paused_until - self._clock())

    def poll(self) -> int:
        """One pull (at most a second); the number of messages received (0 while the
        writer waits after a failed write)."""
        if self.paused_for() > 0:
            return 0
        wanted = max(1, min(_PULL_MAX, self.spec.max_messages - len(self.batch.messages)))
        try:
            response = self._subscriber.pull(
                request={"subscription": self._subscription, "max_messages": wanted},
                timeout=_PULL_TIMEOUT_S,
            )
        except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
            return 0
        messages = [
            Message(
                message_id=received.message.message_id,
                publish_time=received.message.publish_time,
                attributes=dict(received.message.attributes),
                data=bytes(received.message.data),
                ack_id=received.ack_id,
            )
            for received in response.received_messages
        ]
        # Recorded before they are written into a file, so that the emulator's ids do
        # not come round again after its restart (cascade.localcloud.message_ids).
        self._seen([message.message_id for message in messages])
        self.receive(messages)
        return len(messages)


def subscription_request(
    names: StreamNames, spec: StreamSpec, settings: Settings
) -> dict[str, Any]:
    """The subscription ``infra/streams.tf`` creates (google_pubsub_subscription.stream)."""
    return {
        "name": names.subscription_path(settings.project),
        "topic": names.topic_path(settings.project),
        "ack_deadline_seconds": spec.ack_deadline_s,
        "dead_letter_policy": {
            "dead_letter_topic": settings.topic_path("dead-letter"),
            "max_delivery_attempts": spec.max_delivery_attempts,
        },
        "cloud_storage_config": {
            "bucket": settings.landing_bucket,
            "filename_prefix": names.filename_prefix,
            "filename_suffix": names.filename_suffix,
            "filename_datetime_format": DATETIME_FORMAT,
            "max_duration": duration_pb2.Duration(seconds=spec.max_duration_s),
            "max_bytes": spec.max_bytes,
            "max_messages": spec.max_messages,
            "avro_config": {"write_metadata": True, "use_topic_schema": False},
        },
    }


def provision_streams(
    topology: Topology,
    infra_dir: Path,
    settings: Settings,
    schemas: Any,
    publisher: Any,
    subscriber: Any,
) -> list[tuple[StreamSpec, StreamNames]]:
    """Create each stream's schema, topic and subscription (what exists is kept), then
    check the subscription the emulator holds with the service's rules."""
    streams = []
    for dataset, spec in topology.streams.items():
        names = stream_names(dataset, settings.topic_prefix)
        load_record_schema(infra_dir, spec, dataset=dataset)  # a flat record, or refused
        # The file's text as it is, as Terraform's file() sends it.
        definition = (infra_dir / spec.schema_file).read_text(encoding="utf-8")
        with contextlib.suppress(gexc.AlreadyExists):
            schemas.create_schema(
                request={
                    "parent": f"projects/{settings.project}",
                    "schema": {"type_": pubsub_types.Schema.Type.AVRO, "definition": definition},
                    "schema_id": names.schema_id,
                }
            )
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(
                request={
                    "name": names.topic_path(settings.project),
                    "schema_settings": {
                        "schema": names.schema_path(settings.project),
                        "encoding": pubsub_types.Encoding.JSON,
                    },
                }
            )
        with contextlib.suppress(gexc.AlreadyExists):
            subscriber.create_subscription(request=subscription_request(names, spec, settings))
        held = subscriber.get_subscription(
            request={"subscription": names.subscription_path(settings.project)}
        )
        problems = check_cloud_storage_config(held)
        if problems:
            raise InvalidConfigError(
                f"subscription {names.subscription_id}: the service would refuse it: "
                + "; ".join(problems)
            )
        streams.append((spec, names))
    return streams


def publish_stream_schemas(topology: Topology, infra_dir: Path, artifacts: ArtifactStore) -> None:
    """Each stream's schema file into the artifacts bucket, where validate reads it
    (``DatasetPaths.stream_schema``), as Terraform's ``google_storage_bucket_object``
    ``stream_schema`` does: the file's text as it is, rewritten only when it changed."""
    for dataset, spec in topology.streams.items():
        load_record_schema(infra_dir, spec, dataset=dataset)  # a flat record, or refused
        text = (infra_dir / spec.schema_file).read_bytes()
        name = DatasetPaths(dataset).stream_schema
        stored = artifacts.read(name)
        if stored is None or stored.data != text:
            artifacts.write(name, text, content_type="application/json")


def _schema_client(settings: Settings) -> Any:
    from google.pubsub_v1.services.schema_service.transports import (
        SchemaServiceGrpcTransport,
    )

    host = settings.pubsub_emulator_host
    if not host:
        raise InvalidConfigError("gcs-subscriber runs against the Pub/Sub emulator only")
    channel = grpc.insecure_channel(host)
    return pubsub_v1.SchemaServiceClient(transport=SchemaServiceGrpcTransport(channel=channel))


def _save_state(path: Path, writers: list[StreamWriter]) -> None:
    state = {
        writer.names.dataset: {
            "subscription": writer.names.subscription_id,
            "files_written": len(writer.files_written),
            "messages_written": writer.messages_written,
            "open_messages": len(writer.batch.messages),
            "state": writer.state,
            "failed_writes": writer.failed_writes,
            "messages_nacked": writer.messages_nacked,
            "last_error": writer.last_error,
        }
        for writer in writers
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2))
    temporary.replace(path)


def serve(writers: list[StreamWriter], stopping: threading.Event, state_file: Path) -> None:
    _save_state(state_file, writers)
    last_saved = time.monotonic()
    while not stopping.is_set():
        for writer in writers:
            try:
                writer.poll()
                writer.tick()
            except Exception as error:  # noqa: BLE001 - the emulators may be restarting
                # Nothing unwritten was acknowledged: the open batch is written at the
                # next tick, messages of a failed pull are delivered again.
                _log.warning(
                    "%s: pull or write failed: %s: %s",
                    writer.names.subscription_id,
                    type(error).__name__,
                    error,
                )
                stopping.wait(1.0)
        if time.monotonic() - last_saved >= 1.0:
            _save_state(state_file, writers)
            last_saved = time.monotonic()
        if not writers:
            stopping.wait(1.0)
        elif all(writer.paused_for() > 0 for writer in writers):
            # Every writer waits after a failed write: no pull would wait for us.
            stopping.wait(min(1.0, min(writer.paused_for() for writer in writers)))
    # Messages of an unwritten batch were never acknowledged: they are delivered again.
    _save_state(state_file, writers)


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    local = LocalCloudSettings().absolute()
    settings = local.runtime_settings()
    topology = load_topology(local.topology_file)
    subscriber = make_subscriber(settings)
    streams = provision_streams(
        topology,
        local.repo_root / "infra",  # the schema files are the repository's
        settings,
        _schema_client(settings),
        make_publisher(settings),
        subscriber,
    )
    landing = make_storage_client(settings).bucket(settings.landing_bucket)

    def write(name: str, data: bytes) -> None:
        landing.blob(name).upload_from_string(data, content_type="application/avro")

    seen_ids = SeenIds(ids_file(local.state_dir, "gcs-subscriber"))
    writers = [
        StreamWriter(
            spec,
            names,
            settings.project,
            subscriber,
            write,
            duration_scale=local.stream_duration_scale,
            seen=seen_ids.saw,
        )
        for spec, names in streams
    ]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    _log.info("writing %s", ", ".join(w.names.subscription_id for w in writers) or "nothing")
    serve(writers, stopping, local.state_dir / GCS_SUBSCRIBER_STATE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
