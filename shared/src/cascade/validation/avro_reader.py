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
JSON cannot hold (NaN, Infinity). A nullable field's value arrives as Avro's JSON
encoding of a union branch, ``{"string": "north"}`` (a topic with JSON encoding refuses
a bare ``"north"`` for a ``["null", "string"]`` field: checked on the Pub/Sub emulator),
and is read as the value it wraps. A record whose ``message_id`` is empty or longer than
``MAX_MESSAGE_ID_CHARS`` is no record Pub/Sub wrote: the file is refused. Types are
the topic schema's job at publish, and the dataset's schema's job in validation: a
column whose type the caller fixes takes its type (numbers in a text column are written
as text), other columns are inferred from the first batch, and a value that does not fit
widens the column (``ColumnWidening``) as in the other readers, for the validator to
judge.

**Decompression is bounded.** An Avro container compresses block by block (codecs
``deflate``, ``bzip2``, ``xz`` here; ``snappy``, ``zstandard`` and ``lz4`` need libraries
the functions do not install and are refused by name), and a block of a few KiB can
expand into gigabytes. fastavro decompresses a whole block in one call, so this module
walks the container itself (``avro_blocks``: the header, then each block's record count,
size, bytes and sync marker, as the Avro 1.11 specification's "Object Container Files"
lays them out), decompresses each block with a bounded decompressor that stops past
``MAX_BLOCK_BYTES``, and hands fastavro only the decompressed bytes to decode. A block
over the limit, a header over ``MAX_HEADER_BYTES``, a block count or size that cannot
be, a wrong sync marker, or more than ``validation.max_uncompressed_bytes`` in all is bad
input naming the file and the block, never a crash. Rows are handed on in batches of at
most ``parquet_batch_rows`` rows or ``read_block_bytes`` of message data, whichever
comes first, so the decoded rows stay bounded too.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, cast

import fastavro  # type: ignore[import-untyped,unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.streams import AVRO_SCALARS
from cascade.core.validation_config import ValidationConfig
from cascade.validation.source import NETWORK_ERRORS, DataSource
from cascade.validation.widening import ColumnWidening

__all__ = [
    "MAX_BLOCK_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_MESSAGE_ID_CHARS",
    "MESSAGE_ID_COLUMN",
    "MessageIdFilter",
    "RejectedRecord",
    "StreamRecord",
    "avro_blocks",
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
MAX_BLOCK_BYTES = 64 << 20
"""Most bytes one Avro block may hold once decompressed. A block is in memory about
three times at once (compressed, decompressed, decoded), so 64 MiB keeps it well inside
the smallest memory of a function that reads stream files (validate and transform:
2 GiB; ``tests/unit/validation/test_decompression_bombs.py`` checks the topology), and
above the largest message Pub/Sub accepts (10 MB) with its metadata."""
MAX_HEADER_BYTES = 1 << 20
"""Most bytes of an Avro file's header (magic, metadata with the schema, sync marker)."""
_MAGIC = b"Obj\x01"
_SYNC_SIZE = 16
_HEADER_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "org.apache.avro.file.Header",
        "fields": [
            {"name": "magic", "type": {"type": "fixed", "name": "magic", "size": 4}},
            {"name": "meta", "type": {"type": "map", "values": "bytes"}},
            {"name": "sync", "type": {"type": "fixed", "name": "sync", "size": _SYNC_SIZE}},
        ],
    }
)
_CODEC_SLACK = 1 << 20  # a compressed block may be a little larger than its content


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
    position = 0
    total = 0
    with source.open() as raw:
        for block, record in _container_records(raw, source.uri, config):
            position += 1
            location = f"record {position} (block {block})"
            fields = record if isinstance(record, dict) else {}
            data = fields.get("data")
            message_id = fields.get("message_id")
            if not isinstance(data, bytes) or not isinstance(message_id, str):
                raise BadInputError(
                    "the record has no bytes `data` or string `message_id`",
                    uri=source.uri,
                    location=location,
                )
            _check_message_id(message_id, source.uri, position)
            total += len(data)
            if total > config.max_uncompressed_bytes:
                raise BadInputError(
                    f"the messages hold more than {config.max_uncompressed_bytes} bytes "
                    "(validation.max_uncompressed_bytes)",
                    uri=source.uri,
                    location=location,
                )
            yield StreamRecord(position=position, message_id=message_id, data=data)
    if position == 0:
        raise BadInputError("the Avro file has no records", uri=source.uri)


@dataclass(frozen=True)
class AvroBlock:
    number: int  # 1-based, in file order
    count: int  # records in the block
    data: bytes  # decompressed


@dataclass(frozen=True)
class AvroHeader:
    writer_schema: dict[str, Any]
    codec: str
    sync: bytes


def _container_records(
    raw: BinaryIO, uri: str, config: ValidationConfig
) -> Iterator[tuple[int, Any]]:
    """(block number, record) for every record of the container, decoded by fastavro
    from bounded decompressed blocks."""
    header, blocks = avro_blocks(raw, uri, max_total_bytes=config.max_uncompressed_bytes)
    _check_writer_schema(header.writer_schema, uri)
    try:
        parsed = fastavro.parse_schema(header.writer_schema)
    except Exception as error:  # fastavro raises SchemaParseException, ValueError, ...
        raise BadInputError(f"the Avro file's schema is invalid: {error}", uri=uri) from error
    for block in blocks:
        buffer = io.BytesIO(block.data)
        for index in range(block.count):
            try:
                record = fastavro.schemaless_reader(buffer, parsed, None)
            except NETWORK_ERRORS:
                raise
            except Exception as error:  # EOFError, ValueError, UnicodeDecodeError, ...
                raise BadInputError(
                    f"cannot read Avro data: {type(error).__name__}: {error}",
                    uri=uri,
                    location=f"block {block.number}, record {index + 1} of {block.count}",
                ) from error
            yield block.number, record


def avro_blocks(
    raw: BinaryIO, uri: str, *, max_total_bytes: int, max_block_bytes: int = MAX_BLOCK_BYTES
) -> tuple[AvroHeader, Iterator[AvroBlock]]:
    """The container's header, and its blocks decompressed, each at most
    ``max_block_bytes`` and all together at most ``max_total_bytes``: past either limit
    the reading stops with BadInputError naming the block, before the rest is
    decompressed."""
    header = _read_header(raw, uri)
    decompress = _DECOMPRESSORS.get(header.codec)
    if decompress is None:
        raise BadInputError(
            f"the Avro codec {header.codec!r} is not read here (one of "
            f"{', '.join(sorted(_DECOMPRESSORS))})",
            uri=uri,
        )
    return header, _blocks(raw, uri, header, decompress, max_total_bytes, max_block_bytes)


class _Limited:
    """Reads from ``raw``, refusing to go past ``limit`` bytes in all."""

    def __init__(self, raw: BinaryIO, limit: int, uri: str) -> None:
        self._raw = raw
        self._left = limit
        self._uri = uri

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._left:
            raise BadInputError(
                f"the Avro header is larger than {MAX_HEADER_BYTES} bytes", uri=self._uri
            )
        data = self._raw.read(size)
        self._left -= len(data)
        return data


def _read_header(raw: BinaryIO, uri: str) -> AvroHeader:
    try:
        fields = fastavro.schemaless_reader(
            cast(BinaryIO, _Limited(raw, MAX_HEADER_BYTES, uri)), _HEADER_SCHEMA
        )
    except NETWORK_ERRORS:
        raise
    except BadInputError:
        raise
    except Exception as error:  # EOFError, ValueError, ...
        raise BadInputError(f"not a valid Avro file: {error}", uri=uri) from error
    if not isinstance(fields, dict) or fields.get("magic") != _MAGIC:
        raise BadInputError("not a valid Avro file: the magic bytes are wrong", uri=uri)
    meta = fields.get("meta") or {}
    try:
        schema = json.loads(meta["avro.schema"])
        codec = meta.get("avro.codec", b"null").decode("ascii")
    except (KeyError, ValueError) as error:
        raise BadInputError(
            f"not a valid Avro file: the header's schema or codec is unreadable ({error})",
            uri=uri,
        ) from error
    if not isinstance(schema, dict):
        raise BadInputError("not a Pub/Sub stream file: the schema is no record", uri=uri)
    return AvroHeader(writer_schema=schema, codec=codec, sync=bytes(fields["sync"]))


def _read_long(raw: BinaryIO, uri: str, where: str) -> int | None:
    """One Avro ``long`` (zig-zag varint); None at the end of the file."""
    result = 0
    for index in range(10):
        byte = raw.read(1)
        if not byte:
            if index == 0:
                return None
            raise BadInputError("the file ends inside a block header", uri=uri, location=where)
        result |= (byte[0] & 0x7F) << (7 * index)
        if not byte[0] & 0x80:
            return (result >> 1) ^ -(result & 1)
    raise BadInputError("a block header holds a malformed number", uri=uri, location=where)


def _blocks(
    raw: BinaryIO,
    uri: str,
    header: AvroHeader,
    decompress: _Decompressor,
    max_total_bytes: int,
    max_block_bytes: int,
) -> Iterator[AvroBlock]:
    total = 0
    number = 0
    while True:
        number += 1
        where = f"block {number}"
        try:
            count = _read_long(raw, uri, where)
            if count is None:
                return
            size = _read_long(raw, uri, where)
            if size is None:
                raise BadInputError("the file ends inside a block header", uri=uri, location=where)
            # Every record holds at least a message id and data (a byte each).
            if count < 0 or count > max_block_bytes // 2:
                raise BadInputError(
                    f"the block claims {count} records: not a block of this file",
                    uri=uri,
                    location=where,
                )
            if size < 0 or size > max_block_bytes + _CODEC_SLACK:
                raise BadInputError(
                    f"the block is {size} bytes, over the {max_block_bytes}-byte limit "
                    "on an Avro block",
                    uri=uri,
                    location=where,
                )
            compressed = raw.read(size)
            if len(compressed) != size:
                raise BadInputError("the file ends inside a block", uri=uri, location=where)
            left = max_total_bytes - total
            if left < max_block_bytes:  # the file's limit binds first
                try:
                    data = decompress(compressed, left, uri, where)
                except _TooLargeError as error:
                    raise BadInputError(
                        f"the file holds more than {max_total_bytes} bytes once "
                        "decompressed (validation.max_uncompressed_bytes)",
                        uri=uri,
                        location=where,
                    ) from error
            else:
                data = decompress(compressed, max_block_bytes, uri, where)
            if raw.read(_SYNC_SIZE) != header.sync:
                raise BadInputError(
                    "the block is not followed by the file's sync marker (truncated or corrupt)",
                    uri=uri,
                    location=where,
                )
        except NETWORK_ERRORS:
            raise
        except BadInputError:
            raise
        except Exception as error:
            raise BadInputError(
                f"cannot read the block: {type(error).__name__}: {error}", uri=uri, location=where
            ) from error
        total += len(data)
        if total > max_total_bytes:
            raise BadInputError(
                f"the file holds more than {max_total_bytes} bytes once decompressed "
                "(validation.max_uncompressed_bytes)",
                uri=uri,
                location=where,
            )
        yield AvroBlock(number=number, count=count, data=data)


class _Decompressor(Protocol):
    def __call__(self, data: bytes, limit: int, uri: str, where: str) -> bytes: ...


class _TooLargeError(BadInputError):
    """A block that expands past the limit it was decompressed with."""


def _too_large(limit: int, codec: str, uri: str, where: str) -> BadInputError:
    return _TooLargeError(
        f"the block expands past {limit} bytes once decompressed ({codec}): refused before "
        "it is held in memory (a decompression bomb, or blocks larger than a stream file "
        "has)",
        uri=uri,
        location=where,
    )


def _null(data: bytes, limit: int, uri: str, where: str) -> bytes:
    if len(data) > limit:
        raise _too_large(limit, "null", uri, where)
    return data


def _deflate(data: bytes, limit: int, uri: str, where: str) -> bytes:
    inflater = zlib.decompressobj(-15)  # raw deflate, as Avro writes it
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_large(limit, "deflate", uri, where)
        out += inflater.flush()
    except zlib.error as error:
        raise BadInputError(
            f"cannot inflate the block: {error}", uri=uri, location=where
        ) from error
    if len(out) > limit:
        raise _too_large(limit, "deflate", uri, where)
    return out


def _streams(
    codec: str,
    make: Any,
    errors: tuple[type[Exception], ...],
) -> _Decompressor:
    """A decompressor of concatenated bz2 or xz streams (what ``bz2.decompress`` and
    ``lzma.decompress`` accept), stopping once the output passes the limit."""

    def decompress(data: bytes, limit: int, uri: str, where: str) -> bytes:
        parts: list[bytes] = []
        produced = 0
        rest = data
        try:
            while rest:
                decompressor = make()
                parts.append(decompressor.decompress(rest, max_length=limit + 1 - produced))
                produced += len(parts[-1])
                if produced > limit:
                    raise _too_large(limit, codec, uri, where)
                if not decompressor.eof:
                    raise BadInputError(
                        f"the {codec} data of the block ends early", uri=uri, location=where
                    )
                rest = decompressor.unused_data
        except errors as error:
            raise BadInputError(
                f"cannot decompress the block ({codec}): {error}", uri=uri, location=where
            ) from error
        return b"".join(parts)

    return decompress


_DECOMPRESSORS: dict[str, _Decompressor] = {
    "null": _null,
    "deflate": _deflate,
    "bzip2": _streams("bzip2", bz2.BZ2Decompressor, (OSError, ValueError, EOFError)),
    "xz": _streams("xz", lzma.LZMADecompressor, (lzma.LZMAError, EOFError)),
}


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


def record_problem(
    data: bytes, fields: frozenset[str] | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The row a message holds, or None and why it is not one; ``fields``: the names
    the stream's schema allows (``DataSource.record_fields``), None for any."""
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
    if fields is not None:
        unknown = [name for name in value if name not in fields]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            return None, _short(f"field {unknown[0]!r} is not in the stream's schema{more}")
    value = {name: _union_branch(item) for name, item in value.items()}
    for name, item in value.items():
        problem = _value_problem(name, item)
        if problem:
            return None, _short(problem)
    return value, ""


def _union_branch(item: object) -> object:
    """A nullable field's value as Avro's JSON encoding writes it, ``{"string": "x"}``
    (the only form a topic with a union in its schema accepts), as the value itself."""
    if isinstance(item, dict) and len(item) == 1:
        ((branch, inner),) = item.items()
        if branch in AVRO_SCALARS and not isinstance(inner, dict | list):
            return inner
    return item


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
        row, reason = record_problem(record.data, source.record_fields)
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
    held = 0
    first_rejection = ""
    for record in stream_records(source, config):
        row, reason = record_problem(record.data, source.record_fields)
        if row is None:
            first_rejection = first_rejection or f"record {record.position}: {reason}"
            continue
        rows.append(row)
        ids.append(record.message_id)
        held += len(record.data)
        # A batch holds at most parquet_batch_rows rows or read_block_bytes of messages:
        # 65,536 messages of up to 10 MB each would not fit a function's memory.
        if len(rows) >= config.parquet_batch_rows or held >= config.read_block_bytes:
            kept += len(rows)
            yield _batch(rows, ids if with_message_ids else None, types, seen)
            rows, ids, held = [], [], 0
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
