"""``cascade publish-records DATASET FILE``: a file's rows as messages to DATASET's stream.

Each row of a CSV or Parquet file (read by the validation readers) is published as one
JSON object, each line of an NDJSON file as it is (the topic judges its bytes), to the
dataset's ingestion topic (``cascade.core.streams``) with the real Pub/Sub client,
batched for throughput. The topic enforces its Avro schema at
publish: a row it refuses never lands, so it is dead-lettered here, with the topic's
reason, as one line of ``datasets/<d>/stream_dead_letters/publish-<id>.jsonl`` in the
artifacts bucket. A publish request is all or nothing, so the rows of a refused batch
are published again one by one: only the rows the topic refuses are dead-lettered.

Before publishing, each row is held to the stream's Avro schema
(``infra/schemas/<file>.avsc``, named by the topology's ``streams`` entry) in what the
Pub/Sub emulator leaves unchecked: a row with a field the schema does not name is
dead-lettered here, never published (the emulator accepts such a field; whether the
service does is not documented, so Cascade refuses it on both). A CSV or Parquet row's
nullable field is written as Avro's JSON encoding of a union requires, ``{"string":
"north"}`` or ``null``: the topic refuses a bare value for a union (checked on the
emulator), and the stream reader unwraps it.

Against the running local cloud by default; ``--from-env`` publishes with the
environment's settings (Google Cloud, with credentials).
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError
from rich.console import Console
from rich.markup import escape

from cascade.cli.cloud_settings import command_settings
from cascade.core.clients import make_storage_client
from cascade.core.errors import BadInputError, BadRequestError, InvalidConfigError
from cascade.core.settings import DATASET_NAME_PATTERN, Settings
from cascade.core.store import ArtifactStore
from cascade.core.streams import (
    StreamDeadLetter,
    dead_letter_data,
    load_record_schema,
    stream_dead_letters_name,
    stream_names,
)
from cascade.core.topology import load_topology
from cascade.core.validation_config import ValidationConfig
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.validation.names import FileFormat, file_format_of
from cascade.validation.reader import read_batches
from cascade.validation.source import DataSource

__all__ = [
    "PublishReport",
    "publish_records",
    "publish_records_command",
    "schema_fields",
    "stream_publisher",
    "stream_record_schema",
]

console = Console()
_BATCH = pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=4 * 1024**2, max_latency=0.05)
_REFUSALS = (gexc.InvalidArgument, gexc.FailedPrecondition)
_TIMEOUT_S = 60.0


@dataclass
class PublishReport:
    dataset: str
    rows: int = 0
    published: int = 0
    message_ids: list[str] = field(default_factory=list)
    dead_letters: list[StreamDeadLetter] = field(default_factory=list)
    dead_letters_uri: str = ""

    @property
    def dead_lettered(self) -> int:
        return len(self.dead_letters)


def _messages(path: Path, uri: str) -> Iterator[tuple[int, bytes | dict[str, Any]]]:
    """(row number, message): an NDJSON line's bytes as they are (the topic judges them),
    a CSV or Parquet row as the typed values its reader gives."""
    file_format = file_format_of(path.name, uri=uri)
    if file_format in (FileFormat.NDJSON, FileFormat.NDJSON_GZIP):
        opener = gzip.open if file_format.gzipped else open
        with opener(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, line.rstrip(b"\r\n")
        return
    if file_format is FileFormat.AVRO:
        raise BadInputError("publish rows from CSV, NDJSON or Parquet, not Avro", uri=uri)
    source = DataSource.local_file(str(path), file_format, uri=uri)
    number = 0
    for batch in read_batches(source, ValidationConfig()):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _encoded(message: bytes | dict[str, Any], fields: dict[str, str | None] | None) -> bytes:
    """A row as compact JSON, its nullable fields as Avro JSON unions; ValueError for a
    value JSON cannot hold (NaN, inf, bytes) or a field the schema does not name.
    ``fields``: the schema's fields, each with its union's non-null branch (None: no
    union); None when no schema is known (nothing checked)."""
    if isinstance(message, bytes):
        if fields is not None:
            _check_line_fields(message, fields)
        return message
    if fields is not None:
        _check_fields(message, fields)
    for name, value in message.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"field {name!r} is {value}: JSON holds finite numbers only")
        if isinstance(value, bytes | bytearray | memoryview):
            raise ValueError(f"field {name!r} is binary: a record's values are JSON text")
    if fields is not None:
        message = {
            name: {branch: value} if (branch := fields[name]) and value is not None else value
            for name, value in message.items()
        }
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def schema_fields(record_schema: dict[str, Any]) -> dict[str, str | None]:
    """A stream's record schema (``load_record_schema``) as field name -> the non-null
    branch of its union, or None for a field that is no union."""
    found: dict[str, str | None] = {}
    for field_spec in record_schema["fields"]:
        kind = field_spec["type"]
        branches = [k for k in kind if k != "null"] if isinstance(kind, list) else []
        found[field_spec["name"]] = branches[0] if branches else None
    return found


def _check_fields(row: dict[str, Any], fields: dict[str, str | None]) -> None:
    unknown = [name for name in row if name not in fields]
    if unknown:
        raise ValueError(
            f"field {unknown[0]!r} is not in the stream's Avro schema: refused before "
            "publishing (the emulator would take it; Cascade never sends a field the "
            "topic's schema does not name)"
        )


def _check_line_fields(line: bytes, fields: dict[str, str | None]) -> None:
    """An NDJSON line is published as it is; only a JSON object's field names are
    checked here (the topic judges the rest of its bytes)."""
    try:
        value = json.loads(line)
    except ValueError:
        return
    if isinstance(value, dict):
        _check_fields(value, fields)


def publish_records(
    settings: Settings,
    dataset: str,
    path: Path,
    publisher: Any,
    artifacts: ArtifactStore,
    *,
    record_schema: dict[str, Any] | None = None,
) -> PublishReport:
    """Publish every row of ``path``; dead-letter (and record) those the topic refuses,
    and, when ``record_schema`` is given, those with a field it does not name."""
    if not DATASET_NAME_PATTERN.fullmatch(dataset):
        raise BadRequestError(f"{dataset!r} is not a dataset name")
    topic = stream_names(dataset, settings.topic_prefix).topic_path(settings.project)
    uri = str(path)
    report = PublishReport(dataset=dataset)
    pending: list[tuple[int, bytes, Future[str]]] = []
    fields = schema_fields(record_schema) if record_schema is not None else None
    for row_number, row in _messages(path, uri):
        report.rows += 1
        try:
            data = _encoded(row, fields)
        except ValueError as error:
            report.dead_letters.append(_letter(uri, row_number, str(error), str(row)))
            continue
        try:
            # The dataset in an attribute: a message the Cloud Storage subscription
            # cannot write reaches the dead-letters function naming its dataset.
            future = publisher.publish(topic, data, dataset=dataset)
        except MessageTooLargeError as error:  # raised at once, by the client
            report.dead_letters.append(_letter(uri, row_number, _too_large(error), data))
            continue
        pending.append((row_number, data, future))
    _settle(publisher, topic, dataset, uri, pending, report)
    _record(artifacts, report)
    return report


def _settle(
    publisher: Any,
    topic: str,
    topic_dataset: str,
    uri: str,
    pending: list[tuple[int, bytes, Future[str]]],
    report: PublishReport,
) -> None:
    """Wait for every publish; rows of a refused batch are published again alone."""
    retry: list[tuple[int, bytes]] = []
    for row_number, data, future in pending:
        try:
            report.message_ids.append(future.result(timeout=_TIMEOUT_S))
            report.published += 1
        except _REFUSALS:
            retry.append((row_number, data))
    for row_number, data in retry:
        try:
            single = publisher.publish(topic, data, dataset=topic_dataset)
            report.message_ids.append(single.result(timeout=_TIMEOUT_S))
            report.published += 1
        except _REFUSALS as error:
            report.dead_letters.append(_letter(uri, row_number, _reason(error), data))


def _too_large(error: MessageTooLargeError) -> str:
    return f"the message is larger than Pub/Sub accepts: {error}"


def _reason(error: Exception) -> str:
    message = getattr(error, "message", "") or str(error)
    return f"the topic refused the message: {message}"


def _letter(uri: str, row_number: int, reason: str, data: bytes | str) -> StreamDeadLetter:
    return StreamDeadLetter(
        stage="publish",
        source=uri,
        location=f"row {row_number}",
        reason=reason,
        data=dead_letter_data(data),
    )


def _record(artifacts: ArtifactStore, report: PublishReport) -> None:
    if not report.dead_letters:
        return
    name = stream_dead_letters_name(report.dataset, "publish", uuid.uuid4().hex)
    lines = "".join(letter.model_dump_json() + "\n" for letter in report.dead_letters)
    artifacts.write(name, lines.encode(), content_type="application/x-ndjson")
    report.dead_letters_uri = artifacts.uri(name)


@click.command("publish-records")
@click.argument("dataset")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--from-env", is_flag=True, help="Settings from the environment, not the local cloud."
)
@click.option(
    "--repo-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Where infra/ (the topology and the stream schemas) is: the local cloud's by "
    "default, else the current directory.",
)
def publish_records_command(
    dataset: str, file: Path, from_env: bool, repo_root: Path | None
) -> None:
    """Publish FILE's rows (CSV, NDJSON, Parquet) as JSON messages to DATASET's stream."""
    settings = command_settings(from_env, console)
    artifacts = ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)
    publisher = stream_publisher(settings)
    try:
        record_schema = stream_record_schema(dataset, repo_root, from_env=from_env)
        report = publish_records(
            settings, dataset, file, publisher, artifacts, record_schema=record_schema
        )
    except (BadInputError, BadRequestError, InvalidConfigError, gexc.NotFound) as error:
        console.print(f"[red]publish-records refused:[/red] {escape(str(error))}")
        sys.exit(1)
    console.print(
        f"{dataset}: {report.rows} rows read, {report.published} published, "
        f"{report.dead_lettered} dead-lettered"
    )
    if report.dead_letters_uri:
        console.print(f"dead letters (row, reason): {report.dead_letters_uri}")


def stream_record_schema(dataset: str, repo_root: Path | None, *, from_env: bool) -> dict[str, Any]:
    """DATASET's stream record schema, from the topology (``infra/topology.yaml`` under
    ``repo_root``: the running local cloud's repository, or the current directory with
    ``--from-env``); InvalidConfigError when DATASET has no stream."""
    if repo_root is None:
        repo_root = Path(".") if from_env else LocalCloudSettings().absolute().repo_root
    infra = repo_root / "infra"
    if from_env:
        topology = load_topology(infra / "topology.yaml")
    else:
        topology = load_topology(LocalCloudSettings().absolute().topology_file)
    spec = topology.streams.get(dataset)
    if spec is None:
        raise InvalidConfigError(f"dataset {dataset!r} has no stream in the topology")
    return load_record_schema(infra, spec, dataset=dataset)


def stream_publisher(settings: Settings) -> pubsub_v1.PublisherClient:
    """A publisher batching up to 1000 messages or 4 MiB, 50 ms apart at most (the
    emulator's when the settings name one)."""
    if not settings.pubsub_emulator_host:
        return pubsub_v1.PublisherClient(batch_settings=_BATCH)
    import grpc
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    channel = grpc.insecure_channel(settings.pubsub_emulator_host)
    return pubsub_v1.PublisherClient(
        batch_settings=_BATCH, transport=PublisherGrpcTransport(channel=channel)
    )
