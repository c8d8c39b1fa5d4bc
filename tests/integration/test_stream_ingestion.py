"""Streaming ingestion against the real Pub/Sub emulator and fake-gcs-server.

The gcs-subscriber's provisioning creates the topology's stream (schema, topic with
schema settings, Cloud Storage subscription) in the emulator; ``publish-records`` sends
a file's rows with the real client; the emulator refuses at publish what the topic's
Avro schema refuses; the subscriber's writer batches the pulled messages into Avro
files in the landing bucket, which the validation reader reads back.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from cascade.cli.publish_records import publish_records, stream_publisher
from cascade.cli.sample_data import sample_csv
from cascade.core.clients import make_publisher, make_storage_client, make_subscriber
from cascade.core.errors import InvalidConfigError
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.core.streams import StreamSpec, stream_names
from cascade.core.topology import load_topology
from cascade.core.validation_config import ValidationConfig
from cascade.localcloud.gcs_subscriber import (
    StreamWriter,
    _schema_client,
    provision_streams,
    subscription_request,
)
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.pubsub_admin import provision_pubsub
from cascade.validation.avro_reader import read_avro_batches, stream_records
from cascade.validation.names import FileFormat
from cascade.validation.source import DataSource
from tests.conftest import started_emulators

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO_ROOT / "infra" / "topology.yaml"

pytestmark = pytest.mark.integration


@dataclass
class Emulators:
    local: LocalCloudSettings
    settings: Settings
    subscriber: Any


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    with started_emulators(tmp_path_factory.mktemp("stream-emulators")) as local:
        settings = local.runtime_settings()
        topology = load_topology(TOPOLOGY)
        provision_pubsub(
            topology,
            settings,
            local.notifications_topic,
            make_publisher(settings),
            make_subscriber(settings),
        )
        storage = make_storage_client(settings)
        for bucket in (settings.landing_bucket, settings.artifacts_bucket):
            with contextlib.suppress(gexc.Conflict):
                storage.create_bucket(bucket)
        subscriber = make_subscriber(settings)
        provision_streams(
            topology,
            TOPOLOGY.parent,
            settings,
            _schema_client(settings),
            make_publisher(settings),
            subscriber,
        )
        yield Emulators(local, settings, subscriber)


def _publisher(settings: Settings) -> Any:
    return stream_publisher(settings)


def _drain(writer: StreamWriter, expected: int) -> None:
    """Pull until ``expected`` messages were written (bounded by pulls, not sleeps)."""
    for _ in range(200):
        writer.poll()
        if writer.messages_written + len(writer.batch.messages) >= expected:
            break
    writer.flush()


def test_provisioning_creates_the_terraform_subscription(emulators: Emulators) -> None:
    spec = load_topology(TOPOLOGY).streams["credit"]
    names = stream_names("credit", emulators.settings.topic_prefix)
    held = emulators.subscriber.get_subscription(
        request={"subscription": names.subscription_path(emulators.settings.project)}
    )
    config = held.cloud_storage_config
    expected = subscription_request(names, spec, emulators.settings)["cloud_storage_config"]
    assert config.bucket == emulators.settings.landing_bucket
    assert config.filename_prefix == "credit/stream-"
    assert config.filename_suffix == ".avro"
    assert config.filename_datetime_format == expected["filename_datetime_format"]
    assert config.max_messages == spec.max_messages
    assert config.max_bytes == spec.max_bytes
    assert config.max_duration.total_seconds() == spec.max_duration_s
    assert config.avro_config.write_metadata is True
    assert held.ack_deadline_seconds == spec.ack_deadline_s
    assert held.dead_letter_policy.dead_letter_topic.endswith("/topics/cascade-dead-letter")


def test_an_illegal_subscription_in_the_emulator_is_refused(emulators: Emulators) -> None:
    # The emulator accepts max_duration 5 s; the service (and so the stand-in) does not.
    settings = emulators.settings.model_copy(update={"topic_prefix": "illegal-"})
    topology = load_topology(TOPOLOGY)
    names = stream_names("credit", settings.topic_prefix)
    request = subscription_request(names, topology.streams["credit"], settings)
    request["cloud_storage_config"]["max_duration"] = {"seconds": 5}
    del request["dead_letter_policy"]  # this prefix has no dead-letter topic
    publisher = make_publisher(settings)
    publisher.create_topic(name=names.topic_path(settings.project))
    emulators.subscriber.create_subscription(request=request)

    with pytest.raises(InvalidConfigError, match=r"max_duration 5\.0s is outside"):
        provision_streams(
            topology,
            TOPOLOGY.parent,
            settings,
            _schema_client(settings),
            publisher,
            emulators.subscriber,
        )


def test_published_rows_land_as_avro_batches(emulators: Emulators, tmp_path: Path) -> None:
    settings = emulators.settings
    rows = tmp_path / "rows.csv"
    rows.write_bytes(sample_csv(2500, seed=3))
    artifacts = ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)
    landing = make_storage_client(settings).bucket(settings.landing_bucket)
    written: dict[str, bytes] = {}

    def write(name: str, data: bytes) -> None:
        landing.blob(name).upload_from_string(data)
        written[name] = data

    spec = StreamSpec.model_validate({"schema": "schemas/credit.avsc", "max_messages": 1000})
    names = stream_names("credit", settings.topic_prefix)
    writer = StreamWriter(spec, names, settings.project, emulators.subscriber, write)

    report = publish_records(settings, "credit", rows, _publisher(settings), artifacts)
    _drain(writer, 2500)

    assert (report.rows, report.published, report.dead_lettered) == (2500, 2500, 0)
    assert len(written) == 3  # 1000 + 1000 by max_messages, then the rest on flush
    assert all(name.startswith("credit/stream-") and name.endswith(".avro") for name in written)
    landed_ids = []
    for name, data in written.items():
        source = _source(name, data)
        landed_ids += [record.message_id for record in stream_records(source, ValidationConfig())]
        table_rows = sum(b.num_rows for b in read_avro_batches(source, ValidationConfig(), {}))
        assert table_rows == len(list(stream_records(source, ValidationConfig())))
    assert sorted(landed_ids) == sorted(report.message_ids)


def test_records_the_topic_schema_refuses_are_dead_lettered_with_the_reason(
    emulators: Emulators, tmp_path: Path
) -> None:
    settings = emulators.settings
    good = json.loads(_first_json_row())
    lines = [
        json.dumps(good),
        "not json at all",
        json.dumps({**good, "age": "forty"}),  # wrong type
        json.dumps({k: v for k, v in good.items() if k != "income"}),  # missing field
        json.dumps({**good, "region": "nörd ✓ 北"}),  # unicode: fine
        json.dumps({**good, "extra": 1}),  # a field the schema lacks
        json.dumps({**good, "region": "x" * 2_000_000}),  # large, under 10 MB: fine
        json.dumps(good),
    ]
    path = tmp_path / "hostile.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    artifacts = ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)

    report = publish_records(settings, "credit", path, _publisher(settings), artifacts)

    # The emulator takes a field the schema lacks (the dataset's validation judges it).
    assert report.published == 5
    assert [letter.location for letter in report.dead_letters] == ["row 2", "row 3", "row 4"]
    assert all("the topic refused" in letter.reason for letter in report.dead_letters)
    stored = artifacts.read(report.dead_letters_uri.split("/", 3)[3])
    assert stored is not None
    assert len(stored.data.decode().splitlines()) == 3
    # drain what was published so the next test starts from an empty subscription
    spec = StreamSpec.model_validate({"schema": "schemas/credit.avsc"})
    names = stream_names("credit", settings.topic_prefix)
    _drain(StreamWriter(spec, names, settings.project, emulators.subscriber, _ignore), 5)


def _ignore(name: str, data: bytes) -> None:
    del name, data


def _first_json_row() -> str:
    header, first = sample_csv(1).decode().splitlines()[:2]
    values: list[Any] = []
    for column, text in zip(header.split(","), first.split(","), strict=True):
        if column in ("age", "term_months", "credit_score", "num_late_payments", "defaulted"):
            values.append(int(text))
        elif column in ("income", "loan_amount"):
            values.append(float(text))
        else:
            values.append(text)
    return json.dumps(dict(zip(header.split(","), values, strict=True)))


def _source(name: str, data: bytes) -> DataSource:
    import io

    return DataSource(
        uri=f"gs://landing/{name}",
        file_format=FileFormat.AVRO,
        size=len(data),
        open=lambda: contextlib.nullcontext(io.BytesIO(data)),
    )


class _Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_messages_the_writer_cannot_write_go_to_the_dead_letter_topic(
    emulators: Emulators, tmp_path: Path
) -> None:
    # The bucket is missing: each failed write nacks the batch, Pub/Sub counts the
    # deliveries and, after max_delivery_attempts, the emulator itself forwards the
    # messages to the dead-letter topic with the CloudPubSubDeadLetterSource* attributes.
    settings = emulators.settings
    topology = load_topology(TOPOLOGY)
    spec = topology.streams["credit"]
    names = stream_names("credit", settings.topic_prefix)
    watch = f"projects/{settings.project}/subscriptions/verify-dead-letters-{os.getpid()}"
    with contextlib.suppress(gexc.AlreadyExists):
        emulators.subscriber.create_subscription(
            request={"name": watch, "topic": settings.topic_path("dead-letter")}
        )
    rows = tmp_path / "rows.csv"
    rows.write_bytes(sample_csv(3, seed=5))
    artifacts = ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)
    report = publish_records(settings, "credit", rows, _publisher(settings), artifacts)
    assert report.published == 3

    missing = make_storage_client(settings).bucket("no-such-landing-bucket")

    def write(name: str, data: bytes) -> None:
        missing.blob(name).upload_from_string(data)

    ticks = _Ticks()
    writer = StreamWriter(spec, names, settings.project, emulators.subscriber, write, clock=ticks)
    for _ in range(spec.max_delivery_attempts + 3):
        for _ in range(50):  # pulls until the redelivered copies are back (bounded)
            writer.poll()
            if len(writer.batch.messages) >= 3:
                break
        writer.flush()
        ticks.now += 100.0  # past the writer's pause after a failed write
        if writer.messages_nacked >= 3 * spec.max_delivery_attempts:
            break
    assert writer.state == "NOT_FOUND"
    assert writer.files_written == []
    assert writer.messages_nacked == 3 * spec.max_delivery_attempts
    # The next pull finds nothing: the emulator forwards the messages instead of
    # delivering them a sixth time (the running writer pulls all the time).
    writer.poll()
    assert writer.batch.messages == []

    letters: dict[str, Any] = {}
    for _ in range(50):
        response = emulators.subscriber.pull(
            request={"subscription": watch, "max_messages": 10}, timeout=5
        )
        for received in response.received_messages:
            letters[received.message.message_id] = received.message
        if received_ids := [r.ack_id for r in response.received_messages]:
            emulators.subscriber.acknowledge(
                request={"subscription": watch, "ack_ids": received_ids}
            )
        if len(letters) >= 3:
            break
    assert len(letters) == 3
    for letter in letters.values():
        attributes = dict(letter.attributes)
        assert attributes["CloudPubSubDeadLetterSourceSubscription"] == names.subscription_id
        assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == str(
            spec.max_delivery_attempts
        )
        assert attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] == settings.project
        assert attributes["dataset"] == "credit"  # publish-records names it
        assert json.loads(letter.data)["customer_id"]


def test_nullable_fields_publish_as_avro_json_unions_and_unknown_fields_never(
    emulators: Emulators, tmp_path: Path
) -> None:
    # The emulator refuses a bare value for a ["null", "string"] field and takes a field
    # the schema lacks; publish-records wraps the one and refuses the other.
    from google.pubsub_v1 import types as pubsub_types

    settings = emulators.settings.model_copy(update={"topic_prefix": "nullable-"})
    names = stream_names("credit", settings.topic_prefix)
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "age", "type": "long"},
            {"name": "note", "type": ["null", "string"]},
        ],
    }
    with contextlib.suppress(gexc.AlreadyExists):
        _schema_client(settings).create_schema(
            request={
                "parent": f"projects/{settings.project}",
                "schema": {
                    "type_": pubsub_types.Schema.Type.AVRO,
                    "definition": json.dumps(schema),
                },
                "schema_id": names.schema_id,
            }
        )
    publisher = make_publisher(settings)
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
    path = tmp_path / "rows.ndjson"
    path.write_text(
        "\n".join(
            [
                '{"age": 1, "note": {"string": "north"}}',
                '{"age": 2, "note": null}',
                '{"age": 3, "note": "bare"}',  # the topic refuses a bare union value
                '{"age": 4, "note": null, "extra": 1}',  # the emulator would take it
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    csv = tmp_path / "rows.csv"
    csv.write_text("age,note\n5,south\n6,\n", encoding="utf-8")
    artifacts = ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)

    lines = publish_records(
        settings, "credit", path, _publisher(settings), artifacts, record_schema=schema
    )
    rows = publish_records(
        settings, "credit", csv, _publisher(settings), artifacts, record_schema=schema
    )

    assert (lines.published, rows.published) == (2, 2)
    reasons = {letter.location: letter.reason for letter in lines.dead_letters}
    assert sorted(reasons) == ["row 3", "row 4"]
    assert "the topic refused" in reasons["row 3"]
    assert "not in the stream's Avro schema" in reasons["row 4"]
