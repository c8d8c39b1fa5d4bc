"""Datasets fed by a stream: the ``streams`` section of the topology, typed and checked.

A stream is a dataset's ingestion topic (with an Avro schema the topic enforces at
publish) and a Pub/Sub **Cloud Storage subscription** that writes the messages, in
batches, as Avro files into the landing bucket under ``<dataset>/``. Terraform
(``infra/streams.tf``) and the local cloud (``cascade.localcloud.gcs_subscriber``) derive
every name and the subscription's ``cloud_storage_config`` from the same entry here, so
the two cannot differ.

The service's rules for a Cloud Storage subscription (python client reference,
``google.pubsub_v1.types.CloudStorageConfig``): ``max_duration`` from 1 to 10 minutes,
``max_bytes`` from 1 KB to 10 GiB, ``max_messages`` at least 1000, a suffix that does not
end in ``/``, a bucket name without ``gs://``. The Pub/Sub emulator checks none of them,
so ``check_cloud_storage_config`` does, with the service's refusal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.core.errors import InvalidConfigError
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore

__all__ = [
    "AVRO_SCALARS",
    "AVRO_SUFFIX",
    "DATETIME_FORMAT",
    "MAX_BYTES_RANGE",
    "MAX_DURATION_RANGE_S",
    "MIN_MAX_MESSAGES",
    "StreamDeadLetter",
    "StreamFields",
    "StreamNames",
    "StreamSpec",
    "check_cloud_storage_config",
    "dead_letter_data",
    "load_record_schema",
    "parse_record_schema",
    "read_stream_fields",
    "stream_dead_letters_name",
    "stream_names",
]

MAX_DURATION_RANGE_S = (60, 600)
"""``max_duration``: min 1 minute, max 10 minutes (default 5)."""
MAX_BYTES_RANGE = (1024, 10 * 1024**3)
"""``max_bytes``: min 1 KB (taken as 1024, the stricter reading), max 10 GiB."""
MIN_MAX_MESSAGES = 1000
"""``max_messages``: min 1000."""
ACK_DEADLINE_RANGE_S = (10, 600)
"""A subscription's ``ack_deadline_seconds``: 10 to 600."""
DELIVERY_ATTEMPTS_RANGE = (5, 100)
"""A dead-letter policy's ``max_delivery_attempts``: 5 to 100."""

AVRO_SUFFIX = ".avro"
DATETIME_FORMAT = "YYYY-MM-DD/hh_mm_ssZ"
"""The objects' datetime, set explicitly (Google's own Terraform example's format,
``magic-modules`` ``pubsub_subscription_push_cloudstorage_avro``): a folder per day and no
colon, which the landing bucket's name rules (``cascade.validation.names``) refuse. The
service's rendering without it is not in the references read here (the API field only
points at the "datetime format guidance" of create-cloudstorage-subscription), so
Cascade never leaves it unset, and no reader parses the middle of a name: landed names
are matched by ``filename_prefix`` and ``filename_suffix`` alone."""
FILENAME_STEM = "stream-"
_SCHEMA_FILE = re.compile(r"^schemas/[a-z][a-z0-9_-]{0,62}\.avsc$")
AVRO_SCALARS = frozenset({"string", "long", "int", "double", "float", "boolean"})
"""The Avro types a stream field may have (alone, or in a union with ``"null"``)."""


class StreamSpec(BaseModel):
    """One ``streams:`` entry, keyed by the dataset it feeds.

    ``schema_file`` is an Avro record schema under ``infra/schemas/``: its fields are the
    dataset's columns, a nullable field is a union with ``"null"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    description: str = ""
    schema_file: str = Field(alias="schema", pattern=_SCHEMA_FILE.pattern)
    max_duration_s: int = Field(300, ge=MAX_DURATION_RANGE_S[0], le=MAX_DURATION_RANGE_S[1])
    max_bytes: int = Field(10 * 1024**2, ge=MAX_BYTES_RANGE[0], le=MAX_BYTES_RANGE[1])
    max_messages: int = Field(1000, ge=MIN_MAX_MESSAGES)
    ack_deadline_s: int = Field(600, ge=ACK_DEADLINE_RANGE_S[0], le=ACK_DEADLINE_RANGE_S[1])
    max_delivery_attempts: int = Field(
        5, ge=DELIVERY_ATTEMPTS_RANGE[0], le=DELIVERY_ATTEMPTS_RANGE[1]
    )

    @model_validator(mode="after")
    def _deadline_covers_batch(self) -> StreamSpec:
        # The proto: max_duration "may not exceed the subscription's acknowledgement
        # deadline".
        if self.max_duration_s > self.ack_deadline_s:
            raise ValueError(
                f"max_duration_s ({self.max_duration_s}) may not exceed ack_deadline_s "
                f"({self.ack_deadline_s})"
            )
        return self


@dataclass(frozen=True)
class StreamNames:
    """The real ids of a dataset's stream resources (all derived, never taken from a
    caller): ``<topic_prefix>ingest-<dataset>`` for the topic and its schema, the
    subscription ``...-gcs``; objects ``<dataset>/stream-<datetime>_<uuid>.avro``."""

    dataset: str
    topic_id: str
    schema_id: str
    subscription_id: str
    filename_prefix: str
    filename_suffix: str = AVRO_SUFFIX

    def topic_path(self, project: str) -> str:
        return f"projects/{project}/topics/{self.topic_id}"

    def schema_path(self, project: str) -> str:
        return f"projects/{project}/schemas/{self.schema_id}"

    def subscription_path(self, project: str) -> str:
        return f"projects/{project}/subscriptions/{self.subscription_id}"


class StreamDeadLetter(BaseModel):
    """One record of a stream that never reaches training, and why: refused by the topic
    at publish (``stage`` ``publish``: ``row`` of the producer's file) or split out of a
    landed batch (``validate``: ``record`` of the file, its ``message_id``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    source: str
    location: str
    message_id: str = ""
    reason: str
    data: str = ""  # the record's first bytes (decoded leniently), for people


_DEAD_LETTER_DATA = 1024


def dead_letter_data(data: bytes | str) -> str:
    """A record's first bytes as text, for a dead-letter line."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return text[:_DEAD_LETTER_DATA]


def stream_dead_letters_name(dataset: str, stage: str, batch_id: str) -> str:
    """``datasets/<dataset>/stream_dead_letters/<stage>-<batch_id>.jsonl``: one object
    per published file or landed batch (written once: never the same name twice a
    second), a ``StreamDeadLetter`` a line."""
    return f"datasets/{dataset}/stream_dead_letters/{stage}-{batch_id}.jsonl"


def stream_names(dataset: str, topic_prefix: str) -> StreamNames:
    base = f"{topic_prefix}ingest-{dataset}"
    return StreamNames(
        dataset=dataset,
        topic_id=base,
        schema_id=base,
        subscription_id=f"{base}-gcs",
        filename_prefix=f"{dataset}/{FILENAME_STEM}",
    )


def load_record_schema(infra_dir: Path, spec: StreamSpec, *, dataset: str) -> dict[str, Any]:
    """The stream's Avro record schema, checked to be a flat record of scalar fields
    (a column each), nullable as a union with ``"null"``."""
    path = infra_dir / spec.schema_file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidConfigError(f"stream {dataset}: cannot read {path}: {error}") from error
    return parse_record_schema(text, where=f"stream {dataset}: {path}")


def parse_record_schema(text: str | bytes, *, where: str) -> dict[str, Any]:
    """``text`` as a flat Avro record schema; InvalidConfigError naming ``where``."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidConfigError(f"{where}: not JSON: {error}") from error
    if not isinstance(document, dict) or document.get("type") != "record":
        raise InvalidConfigError(f"{where} is not an Avro record schema")
    fields = document.get("fields")
    if not isinstance(fields, list) or not fields:
        raise InvalidConfigError(f"{where} has no fields")
    for position, field in enumerate(fields, start=1):
        problem = _field_problem(field)
        if problem:
            raise InvalidConfigError(f"{where} field {position}: {problem}")
    return document


@dataclass(frozen=True)
class StreamFields:
    """The fields a stream's records may name: its topic's Avro schema, as deployed.

    Pub/Sub refuses at publish a record that lacks a field or has a wrong type; a field
    the schema does not name is accepted (by the emulator, and as far as documented by
    the service), so the record lands with a column the dataset never had. validate
    splits such a record out (a dead letter naming the field) instead of letting it
    quarantine every other producer's records of the batch, and records the names in
    the file's manifest, so transform leaves out exactly the same records.
    """

    names: frozenset[str]
    uri: str
    """The stored schema read (``gs://.../stream_schema.avsc#<generation>``)."""


def read_stream_fields(artifacts: ArtifactStore, dataset: str) -> StreamFields | None:
    """The dataset's stream schema's field names; None when none is deployed (every
    field is then judged by the dataset's schema, as a file's columns are)."""
    name = DatasetPaths(dataset).stream_schema
    stored = artifacts.read(name)
    if stored is None:
        return None
    uri = f"{artifacts.uri(name)}#{stored.generation}"
    document = parse_record_schema(stored.data, where=uri)
    return StreamFields(frozenset(field["name"] for field in document["fields"]), uri)


def _field_problem(field: object) -> str:
    if not isinstance(field, dict) or not isinstance(field.get("name"), str):
        return "not a field with a name"
    kind = field.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    scalars = [k for k in kinds if k != "null"]
    if len(scalars) != 1 or not isinstance(scalars[0], str) or scalars[0] not in AVRO_SCALARS:
        return (
            f"{field['name']!r} must be one of {sorted(AVRO_SCALARS)}, optionally in a union "
            'with "null" (a column holds scalars)'
        )
    return ""


def check_cloud_storage_config(subscription: Any) -> list[str]:
    """What the Pub/Sub service would refuse in a subscription with a
    ``cloud_storage_config`` (a ``google.pubsub_v1.types.Subscription``); empty if none."""
    config = subscription.cloud_storage_config
    problems = []
    if not config.bucket or config.bucket.startswith("gs://") or "/" in config.bucket:
        problems.append(f"bucket {config.bucket!r}: a bucket name without gs:// is required")
    if config.filename_suffix.endswith("/"):
        problems.append("filename_suffix must not end in '/'")
    duration = _seconds(config.max_duration) or 300
    low, high = MAX_DURATION_RANGE_S
    if not low <= duration <= high:
        problems.append(f"max_duration {duration}s is outside [{low}s, {high}s]")
    if config.max_bytes and not MAX_BYTES_RANGE[0] <= config.max_bytes <= MAX_BYTES_RANGE[1]:
        problems.append(f"max_bytes {config.max_bytes} is outside {list(MAX_BYTES_RANGE)}")
    if config.max_messages and config.max_messages < MIN_MAX_MESSAGES:
        problems.append(f"max_messages {config.max_messages} is under {MIN_MAX_MESSAGES}")
    if subscription.push_config.push_endpoint or subscription.bigquery_config.table:
        problems.append("at most one of push_config, bigquery_config, cloud_storage_config")
    deadline = subscription.ack_deadline_seconds or 10
    if duration > deadline:
        problems.append(f"max_duration {duration}s exceeds the ack deadline ({deadline}s)")
    return problems


def _seconds(duration: Any) -> float:
    """A protobuf Duration (or the ``timedelta`` proto-plus makes of it) in seconds."""
    if hasattr(duration, "total_seconds"):
        return float(duration.total_seconds())
    return float(duration.seconds) + float(duration.nanos) / 1e9
