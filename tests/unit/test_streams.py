"""Streams: the topology entry's limits, the derived names, the stand-in's batching,
object naming and Avro records, and the service's rules for a subscription's config."""

from __future__ import annotations

import io
import json
import uuid
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from google.api_core import exceptions as gexc
from google.pubsub_v1 import types as pubsub_types
from pydantic import ValidationError

from cascade.cli.publish_records import publish_records, schema_fields, stream_record_schema
from cascade.core.errors import InvalidConfigError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.settings import Settings
from cascade.core.streams import (
    StreamSpec,
    check_cloud_storage_config,
    load_record_schema,
    read_stream_fields,
    stream_names,
)
from cascade.core.topology import load_topology, parse_topology
from cascade.localcloud.gcs_subscriber import (
    ACTIVE,
    NOT_FOUND,
    PERMISSION_DENIED,
    Message,
    StreamWriter,
    avro_file_bytes,
    object_name,
    publish_stream_schemas,
    subscription_request,
    write_state,
)
from cascade.validation.avro_reader import record_problem
from cascade.validation.names import check_landed_name, file_format_of, landed_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO_ROOT / "infra" / "topology.yaml"
WHEN = datetime(2026, 12, 1, 7, 8, 9, tzinfo=UTC)


def _spec(**fields: Any) -> StreamSpec:
    return StreamSpec.model_validate({"schema": "schemas/credit.avsc", **fields})


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_duration_s", 59),
        ("max_duration_s", 601),
        ("max_bytes", 1023),
        ("max_bytes", 10 * 1024**3 + 1),
        ("max_messages", 999),
        ("ack_deadline_s", 9),
        ("max_delivery_attempts", 4),
        ("max_delivery_attempts", 101),
        ("schema", "../secrets.avsc"),
        ("schema", "/etc/passwd"),
        ("schema", "schemas/credit.json"),
        ("unknown_field", 1),
    ],
)
def test_an_illegal_stream_entry_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        StreamSpec.model_validate({"schema": "schemas/credit.avsc", field: value})


def test_max_duration_may_not_exceed_the_ack_deadline() -> None:
    with pytest.raises(ValidationError, match="may not exceed ack_deadline_s"):
        _spec(max_duration_s=300, ack_deadline_s=120)


def test_the_limits_accept_their_bounds() -> None:
    low = _spec(max_duration_s=60, max_bytes=1024, max_messages=1000, ack_deadline_s=60)
    high = _spec(max_duration_s=600, max_bytes=10 * 1024**3, ack_deadline_s=600)
    assert (low.max_duration_s, high.max_duration_s) == (60, 600)


def test_a_stream_key_must_be_a_dataset_name() -> None:
    document = load_topology(TOPOLOGY).model_dump(by_alias=True)
    document["streams"] = {"Bad Name": {"schema": "schemas/credit.avsc"}}
    with pytest.raises(InvalidConfigError, match="not a dataset name"):
        parse_topology(document)


def test_the_shipped_topology_streams_credit_with_a_flat_schema() -> None:
    topology = load_topology(TOPOLOGY)
    schema = load_record_schema(TOPOLOGY.parent, topology.streams["credit"], dataset="credit")
    assert [field["name"] for field in schema["fields"]][:2] == ["customer_id", "age"]


@pytest.mark.parametrize(
    "definition",
    [
        '{"type": "enum", "name": "x", "symbols": ["a"]}',
        '{"type": "record", "name": "x", "fields": []}',
        '{"type": "record", "name": "x", "fields": [{"name": "a", "type": {"type": "map", '
        '"values": "string"}}]}',
        '{"type": "record", "name": "x", "fields": [{"name": "a", "type": ["string", "long"]}]}',
        "not json",
    ],
)
def test_a_record_schema_that_is_no_flat_row_is_refused(tmp_path: Path, definition: str) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "credit.avsc").write_text(definition)
    with pytest.raises(InvalidConfigError):
        load_record_schema(tmp_path, _spec(), dataset="credit")


# ------------------------------------------------------------------ names


def test_names_are_derived_from_the_dataset_and_prefix() -> None:
    names = stream_names("credit", "cascade-")
    assert names.topic_id == "cascade-ingest-credit"
    assert names.schema_id == "cascade-ingest-credit"
    assert names.subscription_id == "cascade-ingest-credit-gcs"
    assert names.filename_prefix == "credit/stream-"
    assert names.filename_suffix == ".avro"


def test_object_names_follow_the_service_and_are_accepted_landed_names() -> None:
    names = stream_names("credit", "cascade-")
    unique = uuid.UUID("12345678-1234-5678-1234-567812345678")
    name = object_name(names, WHEN, unique)
    assert name == f"credit/stream-2026-12-01/07_08_09Z_{unique}.avro"
    assert check_landed_name(name) == name
    assert landed_dataset(name) == "credit"
    assert file_format_of(name).value == "avro"


# ------------------------------------------------------------------ the subscription


def test_the_subscription_request_is_what_terraform_declares() -> None:
    settings = Settings()
    spec = _spec(max_duration_s=120, max_bytes=2048, max_messages=1500, ack_deadline_s=300)
    request = subscription_request(stream_names("credit", "cascade-"), spec, settings)
    subscription = pubsub_types.Subscription(request)
    config = subscription.cloud_storage_config
    assert subscription.name == "projects/cascade-local/subscriptions/cascade-ingest-credit-gcs"
    assert subscription.topic == "projects/cascade-local/topics/cascade-ingest-credit"
    assert subscription.ack_deadline_seconds == 300
    assert subscription.dead_letter_policy.max_delivery_attempts == 5
    assert config.bucket == "cascade-landing"
    assert (config.filename_prefix, config.filename_suffix) == ("credit/stream-", ".avro")
    assert config.filename_datetime_format == "YYYY-MM-DD/hh_mm_ssZ"
    assert config.max_duration.total_seconds() == 120
    assert (config.max_bytes, config.max_messages) == (2048, 1500)
    assert config.avro_config.write_metadata is True
    assert config.avro_config.use_topic_schema is False
    assert check_cloud_storage_config(subscription) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"max_duration": {"seconds": 5}}, "max_duration 5.0s is outside"),
        ({"max_duration": {"seconds": 601}}, "max_duration 601.0s is outside"),
        ({"max_bytes": 10}, "max_bytes 10 is outside"),
        ({"max_messages": 10}, "max_messages 10 is under 1000"),
        ({"filename_suffix": ".avro/"}, "must not end in '/'"),
        ({"bucket": "gs://cascade-landing"}, "without gs://"),
        ({"bucket": ""}, "without gs://"),
    ],
)
def test_what_the_service_refuses_is_refused(change: dict[str, Any], problem: str) -> None:
    request = subscription_request(stream_names("credit", "cascade-"), _spec(), Settings())
    request["cloud_storage_config"].update(change)
    problems = check_cloud_storage_config(pubsub_types.Subscription(request))
    assert any(problem in text for text in problems), problems


def test_push_and_cloud_storage_together_are_refused() -> None:
    request = subscription_request(stream_names("credit", "cascade-"), _spec(), Settings())
    request["push_config"] = {"push_endpoint": "https://example.com/push"}
    problems = check_cloud_storage_config(pubsub_types.Subscription(request))
    assert any("at most one of" in text for text in problems)


def test_a_max_duration_over_the_ack_deadline_is_refused() -> None:
    request = subscription_request(stream_names("credit", "cascade-"), _spec(), Settings())
    request["ack_deadline_seconds"] = 60
    problems = check_cloud_storage_config(pubsub_types.Subscription(request))
    assert any("exceeds the ack deadline" in text for text in problems)


# ------------------------------------------------------------------ Avro records


def _message(index: int, data: bytes = b'{"a": 1}') -> Message:
    return Message(
        message_id=f"m{index}",
        publish_time=WHEN,
        attributes={"row": str(index)},
        data=data,
        ack_id=f"ack{index}",
    )


def test_an_avro_file_holds_the_write_metadata_fields() -> None:
    data = avro_file_bytes("projects/p/subscriptions/s", [_message(1), _message(2)])
    reader = fastavro.reader(io.BytesIO(data))
    fields = [field["name"] for field in reader.writer_schema["fields"]]
    records = list(reader)
    assert fields == ["subscription_name", "message_id", "publish_time", "attributes", "data"]
    assert records[0] == {
        "subscription_name": "projects/p/subscriptions/s",
        "message_id": "m1",
        "publish_time": WHEN,
        "attributes": {"row": "1"},
        "data": b'{"a": 1}',
    }
    assert [record["message_id"] for record in records] == ["m1", "m2"]


# ------------------------------------------------------------------ batching


class FakeSubscriber:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self.pulls = 0

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        self.pulls += 1
        return pubsub_types.PullResponse()

    def acknowledge(self, request: dict[str, Any]) -> Any:
        self.acked += request["ack_ids"]

    def modify_ack_deadline(self, request: dict[str, Any]) -> Any:
        assert request["ack_deadline_seconds"] == 0  # a nack
        self.nacked += request["ack_ids"]


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _writer(
    spec: StreamSpec,
    *,
    fail_writes: bool = False,
    scale: float = 1.0,
    failures: list[Exception] | None = None,
) -> Any:
    files: dict[str, bytes] = {}
    subscriber = FakeSubscriber()
    ticks = Ticks()

    def write(name: str, data: bytes) -> None:
        if fail_writes:
            raise ConnectionError("storage is down")
        if failures:
            raise failures.pop(0)
        files[name] = data

    writer = StreamWriter(
        spec,
        stream_names("credit", "cascade-"),
        "p",
        subscriber,
        write,
        duration_scale=scale,
        clock=ticks,
        wall_clock=lambda: WHEN,
    )
    return writer, files, subscriber, ticks


def _count(data: bytes) -> int:
    return sum(1 for _ in fastavro.reader(io.BytesIO(data)))


def test_a_file_is_written_at_max_messages() -> None:
    writer, files, subscriber, _ = _writer(_spec(max_messages=1000))
    writer.receive(_message(i) for i in range(2500))
    assert [_count(data) for data in files.values()] == [1000, 1000]
    assert len(subscriber.acked) == 2000
    assert len(writer.batch.messages) == 500


def test_a_file_is_written_at_max_bytes_and_one_large_message_may_exceed_it() -> None:
    writer, files, _, _ = _writer(_spec(max_bytes=1024))
    writer.receive([_message(1, b"x" * 600), _message(2, b"y" * 600), _message(3, b"z" * 5000)])
    assert [_count(data) for data in files.values()] == [2, 1]


def test_a_file_is_written_at_max_duration_scaled() -> None:
    writer, files, _, ticks = _writer(_spec(max_duration_s=60), scale=0.1)
    writer.receive([_message(1)])
    ticks.now = 5.9
    writer.tick()
    assert files == {}
    ticks.now = 6.0
    writer.tick()
    assert [_count(data) for data in files.values()] == [1]


def test_an_empty_batch_writes_nothing() -> None:
    writer, files, _, ticks = _writer(_spec())
    ticks.now = 10_000
    writer.tick()
    writer.flush()
    assert files == {}


def test_messages_are_acknowledged_only_after_the_file_is_written() -> None:
    writer, files, subscriber, _ = _writer(_spec(max_messages=1000), fail_writes=True)
    writer.receive(_message(i) for i in range(1000))
    assert subscriber.acked == []  # redelivered: at least once, never lost
    assert files == {}


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (gexc.NotFound("The specified bucket does not exist."), NOT_FOUND),
        (gexc.Forbidden("does not have storage.objects.create access"), PERMISSION_DENIED),
        (ConnectionError("storage is down"), ACTIVE),
        (gexc.ServiceUnavailable("try again"), ACTIVE),
    ],
)
def test_a_batch_that_cannot_be_written_is_nacked_for_pub_sub_to_count(
    error: Exception, state: str
) -> None:
    # A nack is a failed delivery: Pub/Sub delivers the messages again and, after the
    # subscription's max_delivery_attempts, forwards them to the dead-letter topic.
    writer, files, subscriber, _ = _writer(_spec(max_messages=1000), failures=[error])
    writer.receive(_message(i) for i in range(1000))
    assert files == {}
    assert subscriber.acked == []
    assert subscriber.nacked == [f"ack{i}" for i in range(1000)]
    assert not writer.batch.messages  # the next batch holds the redelivered copies
    assert (writer.state, writer.failed_writes, writer.messages_nacked) == (state, 1, 1000)
    assert type(error).__name__ in writer.last_error


def test_after_a_failed_write_the_writer_waits_longer_each_time_then_recovers() -> None:
    failures: list[Exception] = [gexc.NotFound("no bucket"), gexc.NotFound("no bucket")]
    writer, files, subscriber, ticks = _writer(_spec(max_messages=1000), failures=failures)
    writer.receive(_message(i) for i in range(1000))  # fails: pause 1 s
    assert writer.poll() == 0
    assert subscriber.pulls == 0
    ticks.now = 1.0
    writer.poll()
    assert subscriber.pulls == 1
    writer.receive(_message(i) for i in range(1000))  # fails again: pause 2 s
    ticks.now = 2.5
    assert writer.poll() == 0
    assert subscriber.pulls == 1
    ticks.now = 3.0
    writer.poll()
    assert subscriber.pulls == 2
    writer.receive(_message(i) for i in range(1000))  # written
    assert len(files) == 1
    assert writer.state == ACTIVE
    assert writer.paused_for() == 0
    assert subscriber.acked == [f"ack{i}" for i in range(1000)]


def test_write_states_follow_the_service() -> None:
    assert write_state(gexc.NotFound("x")) == NOT_FOUND
    assert write_state(gexc.Forbidden("x")) == PERMISSION_DENIED
    assert write_state(gexc.PermissionDenied("x")) == PERMISSION_DENIED
    assert write_state(gexc.Unauthorized("x")) == PERMISSION_DENIED
    assert write_state(gexc.TooManyRequests("x")) == ACTIVE


# ------------------------------------------------------------------ publish-records and the schema

NULLABLE_SCHEMA = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "age", "type": "long"},
        {"name": "note", "type": ["null", "string"]},
    ],
}


class RecordingTopic:
    """Takes every message (what the emulator does with a field the schema lacks)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
        self.sent.append((data, attributes))
        future: Future[str] = Future()
        future.set_result(str(len(self.sent)))
        return future


def test_publish_records_writes_nullable_fields_as_avro_json_unions(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("age,note\n40,north\n41,\n", encoding="utf-8")
    topic = RecordingTopic()
    report = publish_records(
        Settings(), "credit", path, topic, MemoryArtifactStore("a"), record_schema=NULLABLE_SCHEMA
    )
    assert report.published == 2
    assert [json.loads(data) for data, _ in topic.sent] == [
        {"age": 40, "note": {"string": "north"}},
        {"age": 41, "note": None},
    ]
    assert {attributes["dataset"] for _, attributes in topic.sent} == {"credit"}
    # ... and the stream reader reads the union's value back
    assert [record_problem(data)[0] for data, _ in topic.sent] == [
        {"age": 40, "note": "north"},
        {"age": 41, "note": None},
    ]


@pytest.mark.parametrize("suffix", [".csv", ".ndjson"])
def test_publish_records_refuses_a_field_the_schema_does_not_name(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        path.write_text("age,note,extra\n40,,1\n", encoding="utf-8")
    else:
        lines = ['{"age": 40, "note": null}', '{"age": 40, "note": null, "extra": 1}', "no json"]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    topic = RecordingTopic()
    store = MemoryArtifactStore("a")
    report = publish_records(
        Settings(), "credit", path, topic, store, record_schema=NULLABLE_SCHEMA
    )
    refused = [letter for letter in report.dead_letters if "extra" in letter.reason]
    assert len(refused) == 1
    assert "not in the stream's Avro schema" in refused[0].reason
    assert all(b"extra" not in data for data, _ in topic.sent)  # never published
    if suffix == ".ndjson":
        assert refused[0].location == "row 2"
        assert len(topic.sent) == 2  # the good line, and the one the topic judges


def test_without_a_schema_nothing_is_checked_or_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("age,note,extra\n40,north,1\n", encoding="utf-8")
    topic = RecordingTopic()
    publish_records(Settings(), "credit", path, topic, MemoryArtifactStore("a"))
    assert json.loads(topic.sent[0][0]) == {"age": 40, "note": "north", "extra": 1}


def test_the_command_reads_the_streams_schema_from_the_topology() -> None:
    schema = stream_record_schema("credit", REPO_ROOT, from_env=True)
    assert schema_fields(schema)["age"] is None
    assert set(schema_fields(schema)) == {
        "customer_id",
        "age",
        "income",
        "loan_amount",
        "term_months",
        "credit_score",
        "employment",
        "home_ownership",
        "purpose",
        "region",
        "num_late_payments",
        "defaulted",
    }
    with pytest.raises(InvalidConfigError, match="has no stream"):
        stream_record_schema("nostream", REPO_ROOT, from_env=True)


@pytest.mark.parametrize(
    ("wrapped", "read"),
    [
        ({"string": "north"}, "north"),
        ({"long": 3}, 3),
        ({"double": 1.5}, 1.5),
        ({"boolean": True}, True),
    ],
)
def test_the_stream_reader_unwraps_avro_json_union_branches(wrapped: Any, read: Any) -> None:
    row, reason = record_problem(json.dumps({"f": wrapped}).encode())
    assert reason == ""
    assert row == {"f": read}


@pytest.mark.parametrize(
    "value",
    [{"string": "a", "long": 1}, {"record": "x"}, {"string": {"nested": 1}}, {"string": [1]}],
)
def test_objects_that_are_no_union_branch_are_still_split_out(value: Any) -> None:
    row, reason = record_problem(json.dumps({"f": value}).encode())
    assert row is None
    assert "a column holds scalars" in reason


class PullingSubscriber(FakeSubscriber):
    """Answers the first pull with two messages, numbered as the emulator numbers them."""

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        self.pulls += 1
        if self.pulls > 1:
            return pubsub_types.PullResponse()
        return pubsub_types.PullResponse(
            received_messages=[
                pubsub_types.ReceivedMessage(
                    ack_id=f"ack{n}",
                    message=pubsub_types.PubsubMessage(
                        data=b'{"a": 1}', message_id=str(n), publish_time=WHEN
                    ),
                )
                for n in (41, 42)
            ]
        )


def test_pulled_ids_are_recorded_before_their_file_is_written() -> None:
    """The emulator's ids must not come round again after its restart: the writer hands
    them to ``seen`` (cascade.localcloud.message_ids) before they are in a landed file."""
    seen: list[str] = []
    recorded_at_write: list[list[str]] = []

    def write(name: str, data: bytes) -> None:
        recorded_at_write.append(list(seen))

    writer = StreamWriter(
        _spec(),
        stream_names("credit", "cascade-"),
        "p",
        PullingSubscriber(),
        write,
        wall_clock=lambda: WHEN,
        seen=seen.extend,
    )
    assert writer.poll() == 2
    writer.flush()
    assert recorded_at_write == [["41", "42"]]


def test_provisioning_deploys_each_stream_schema_where_validate_reads_it(tmp_path: Path) -> None:
    """As Terraform's ``stream_schema`` objects: the file's text, read back by
    ``read_stream_fields``; an unchanged file is not written again, a changed one is."""
    topology = load_topology(TOPOLOGY)
    artifacts = MemoryArtifactStore("cascade-artifacts")
    infra = tmp_path / "infra"
    (infra / "schemas").mkdir(parents=True)
    schema_file = infra / topology.streams["credit"].schema_file
    schema_file.write_bytes(
        (REPO_ROOT / "infra" / topology.streams["credit"].schema_file).read_bytes()
    )

    publish_stream_schemas(topology, infra, artifacts)
    first = artifacts.stat(DatasetPaths("credit").stream_schema)
    publish_stream_schemas(topology, infra, artifacts)
    again = artifacts.stat(DatasetPaths("credit").stream_schema)
    document = json.loads(schema_file.read_text())
    document["fields"].append({"name": "channel", "type": ["null", "string"]})
    schema_file.write_text(json.dumps(document))
    publish_stream_schemas(topology, infra, artifacts)
    fields = read_stream_fields(artifacts, "credit")

    assert first is not None
    assert again is not None
    assert again.generation == first.generation
    assert fields is not None
    assert fields.names == {field["name"] for field in document["fields"]}
    assert fields.uri.startswith("gs://cascade-artifacts/datasets/credit/stream_schema.avsc#")
    assert read_stream_fields(artifacts, "other") is None  # no stream: any field
