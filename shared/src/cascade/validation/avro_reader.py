"""Stream files: the Avro files a Pub/Sub Cloud Storage subscription writes, read as rows.

Each Avro record is one Pub/Sub message, written with ``avro_config.write_metadata``:
``subscription_name``, ``message_id``, ``publish_time``, ``attributes`` and ``data`` (the
bytes the producer published). The writer schema is read from the file's header (Avro
files describe themselves); only ``message_id`` and ``data`` are required of it.

A message's ``data`` must be one JSON object whose values are scalars: a row of the
dataset. A stream file mixes many producers, so a record that is not a usable row is
**split out**, never silently dropped: ``read_avro_batches`` leaves it out of the rows
and ``rejected_records`` lists it (record number, message id, reason) for the step to
record as a dead letter and count on the run. Both apply the same ``record_problem``,
so the rows read and the records rejected are complementary by construction.

What splits a record out depends on the record alone (the same in validate and
transform, whatever types either reads with): bytes that are not UTF-8, not JSON, not a
JSON object, an empty object, a field with an empty name (as a CSV header's), a field
named ``MESSAGE_ID_COLUMN`` (reserved for the
message's id), a value that is an object or a list (a column holds scalars) or a number
JSON cannot hold (NaN, Infinity). A record whose ``message_id`` is empty or longer than
``MAX_MESSAGE_ID_CHARS`` is no record Pub/Sub wrote: the file is refused. Types are
the topic schema's job at publish, and the dataset's schema's job in validation: a
column whose type the caller fixes takes its type (numbers in a text column are written
as text), other columns are inferred from the first batch, and a value that does not fit
widens the column (``ColumnWidening``) as in the other readers, for the validator to
judge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastavro  # type: ignore[import-untyped,unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.source import NETWORK_ERRORS, DataSource
from cascade.validation.widening import ColumnWidening

__all__ = [
    "MAX_MESSAGE_ID_CHARS",
    "MESSAGE_ID_COLUMN",
    "MessageIdFilter",
    "RejectedRecord",
    "StreamRecord",
    "read_avro_batches",
    "record_problem",
    "rejected_records",
    "stream_records",
]

MESSAGE_ID_COLUMN = "__message_id"
"""The column ``read_avro_batches(with_message_ids=True)`` adds (transform's dedup)."""
_REQUIRED_FIELDS = ("message_id", "data")
_MAX_REASON = 300
MAX_MESSAGE_ID_CHARS = 256
"""Longest message id read: Pub/Sub's are short decimal strings; a forged file's
empty or huge ids would merge records in deduplication or swell alerts."""


@dataclass(frozen=True)
class StreamRecord:
    position: int  # 1-based, in file order
    message_id: str
    data: bytes


@dataclass(frozen=True)
class RejectedRecord:
    position: int
    message_id: str
    reason: str

    def location(self) -> str:
        return f"record {self.position} (message {self.message_id})"


def stream_records(source: DataSource, config: ValidationConfig) -> Iterator[StreamRecord]:
    """The file's messages in order; BadInputError if it is no stream file."""
    total = 0
    with source.open() as raw:
        try:
            reader = fastavro.reader(raw)
        except NETWORK_ERRORS:
            raise
        except Exception as error:  # fastavro raises ValueError, EOFError, ...
            raise BadInputError(f"not a valid Avro file: {error}", uri=source.uri) from error
        _check_writer_schema(reader.writer_schema, source.uri)
        position = 0
        try:
            for record in reader:
                position += 1
                fields = record if isinstance(record, dict) else {}
                data = fields.get("data")
                message_id = fields.get("message_id")
                if not isinstance(data, bytes) or not isinstance(message_id, str):
                    raise BadInputError(
                        "the record has no bytes `data` or string `message_id`",
                        uri=source.uri,
                        location=f"record {position}",
                    )
                _check_message_id(message_id, source.uri, position)
                total += len(data)
                if total > config.max_uncompressed_bytes:
                    raise BadInputError(
                        f"the messages hold more than {config.max_uncompressed_bytes} bytes "
                        "(validation.max_uncompressed_bytes)",
                        uri=source.uri,
                    )
                yield StreamRecord(position=position, message_id=message_id, data=data)
        except NETWORK_ERRORS:
            raise
        except BadInputError:
            raise
        except Exception as error:
            raise BadInputError(
                f"cannot read Avro data: {error}", uri=source.uri, location=f"record {position + 1}"
            ) from error
    if position == 0:
        raise BadInputError("the Avro file has no records", uri=source.uri)


def _check_message_id(message_id: str, uri: str, position: int) -> None:
    if not message_id or len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise BadInputError(
            f"the record's message_id is {len(message_id)} characters long: a Pub/Sub "
            f"message id has 1 to {MAX_MESSAGE_ID_CHARS} (not a file the subscription wrote)",
            uri=uri,
            location=f"record {position}",
        )


def _check_writer_schema(schema: Any, uri: str) -> None:
    fields = schema.get("fields") if isinstance(schema, dict) else None
    names = {field.get("name") for field in fields or [] if isinstance(field, dict)}
    missing = [name for name in _REQUIRED_FIELDS if name not in names]
    if missing:
        raise BadInputError(
            f"not a Pub/Sub stream file: the Avro schema lacks {', '.join(missing)} "
            "(write the subscription's files with avro_config.write_metadata)",
            uri=uri,
        )


def record_problem(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The row a message holds, or None and why it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"the message is not UTF-8 text (byte {error.start})"
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        return None, _short(f"the message is not valid JSON: {error}")
    if not isinstance(value, dict):
        return None, f"the message must be a JSON object, got {type(value).__name__}"
    if not value:
        return None, "the message is an empty JSON object"
    if "" in value:
        return None, "a field has an empty name (a column needs a name)"
    if MESSAGE_ID_COLUMN in value:
        return None, f"field {MESSAGE_ID_COLUMN!r} is reserved for the message's Pub/Sub id"
    for name, item in value.items():
        problem = _value_problem(name, item)
        if problem:
            return None, _short(problem)
    return value, ""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _short(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _value_problem(name: str, value: object) -> str:
    if isinstance(value, dict | list):
        return f"field {name!r} holds a {type(value).__name__}: a column holds scalars"
    if isinstance(value, float) and not math.isfinite(value):
        return f"field {name!r} is not a finite number"
    return ""


def rejected_records(source: DataSource, config: ValidationConfig) -> list[RejectedRecord]:
    """Every record ``read_avro_batches`` leaves out, and why."""
    rejected = []
    for record in stream_records(source, config):
        row, reason = record_problem(record.data)
        if row is None:
            rejected.append(RejectedRecord(record.position, record.message_id, reason))
    return rejected


def read_avro_batches(
    source: DataSource,
    config: ValidationConfig,
    column_types: dict[str, pa.DataType],
    *,
    with_message_ids: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The usable rows of a stream file as record batches (rejected records left out).

    With ``with_message_ids`` each row also has ``MESSAGE_ID_COLUMN``. BadInputError when
    no record is usable.
    """
    types = dict(column_types)
    seen: list[str] = []
    rows: list[dict[str, Any]] = []
    ids: list[str] = []
    kept = 0
    first_rejection = ""
    for record in stream_records(source, config):
        row, reason = record_problem(record.data)
        if row is None:
            first_rejection = first_rejection or f"record {record.position}: {reason}"
            continue
        rows.append(row)
        ids.append(record.message_id)
        if len(rows) >= config.parquet_batch_rows:
            kept += len(rows)
            yield _batch(rows, ids if with_message_ids else None, types, seen)
            rows, ids = [], []
    if rows:
        kept += len(rows)
        yield _batch(rows, ids if with_message_ids else None, types, seen)
    if kept == 0:
        raise BadInputError(
            f"no record of the stream file is a usable row (first: {first_rejection})",
            uri=source.uri,
        )


def _batch(
    rows: list[dict[str, Any]],
    ids: list[str] | None,
    types: dict[str, pa.DataType],
    seen: list[str],
) -> pa.RecordBatch:
    """One batch with every column seen so far (``seen`` gains this batch's new ones, in
    order of appearance); ``types`` gains the inferred type of every new column."""
    for name in dict.fromkeys(name for row in rows for name in row):
        if name not in seen:
            seen.append(name)
    arrays, fields = [], []
    for name in seen:
        values = [row.get(name) for row in rows]
        array = _column(name, values, types)
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    if ids is not None:
        arrays.append(pa.array(ids, pa.string()))
        fields.append(pa.field(MESSAGE_ID_COLUMN, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _column(name: str, values: list[Any], types: dict[str, pa.DataType]) -> pa.Array:
    known = types.get(name)
    if known is None:
        known = _inferred(values)
        types[name] = known
    if pa.types.is_string(known):
        return pa.array([_text(value) for value in values], pa.string())
    try:
        return pa.array(values, known)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        wider = pa.float64() if _all_numbers(values) and pa.types.is_integer(known) else None
        raise ColumnWidening(name, wider or pa.string()) from None


def _inferred(values: list[Any]) -> pa.DataType:
    present = [value for value in values if value is not None]
    if not present:
        return pa.string()
    if all(isinstance(value, bool) for value in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if _all_numbers(present):
        return pa.float64()
    return pa.string()


def _all_numbers(values: list[Any]) -> bool:
    return all(
        value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        for value in values
    )


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


class MessageIdFilter:
    """Drops rows whose message id was seen before (at-least-once delivery can write a
    message into two files), across every file it is given, in the order given; and
    ``MESSAGE_ID_COLUMN`` with them. ``removed`` counts the rows dropped."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self.removed = 0

    def keep_first(self, table: pa.Table) -> pa.Table:
        if MESSAGE_ID_COLUMN not in table.column_names:
            return table
        ids = table.column(MESSAGE_ID_COLUMN).to_pylist()
        keep = []
        for message_id in ids:
            fresh = message_id not in self._seen
            self._seen.add(message_id)
            keep.append(fresh)
        self.removed += keep.count(False)
        kept = table if all(keep) else table.filter(pa.array(keep))
        return kept.drop_columns([MESSAGE_ID_COLUMN])
