"""Decompression bombs: a few KiB of Avro or Parquet that expand past the limits are
refused as bad input naming the file and the block or row group, before the expansion is
held in memory; honest files of every codec still read."""

from __future__ import annotations

import bz2
import contextlib
import functools
import io
import lzma
import subprocess
import sys
import textwrap
import zlib
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cascade.core.errors import BadInputError
from cascade.core.topology import load_topology
from cascade.core.validation_config import ValidationConfig
from cascade.localcloud.gcs_subscriber import PUBSUB_AVRO_SCHEMA, Message, avro_file_bytes
from cascade.validation.avro_reader import MAX_BLOCK_BYTES, stream_records
from cascade.validation.names import FileFormat
from cascade.validation.parquet_reader import MAX_COLUMN_CHUNK_BYTES, MAX_DECODED_BATCH_BYTES
from cascade.validation.reader import read_batches
from cascade.validation.source import DataSource

REPO = Path(__file__).resolve().parents[3]
WHEN = datetime(2026, 12, 1, tzinfo=UTC)
ROW = b'{"age": 40, "region": "north"}'


def _source(data: bytes, file_format: FileFormat, uri: str) -> DataSource:
    return DataSource(
        uri=uri,
        file_format=file_format,
        size=len(data),
        open=lambda: contextlib.nullcontext(io.BytesIO(data)),
    )


def _long(value: int) -> bytes:
    """An Avro long (zig-zag varint)."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _record(data_bytes: int) -> bytes:
    """One PubsubMessage record whose data is ``data_bytes`` zero bytes (the schema's
    binary encoding, built without allocating the zeros twice)."""
    head = b"".join(
        [
            _long(len(b"projects/p/subscriptions/s")) + b"projects/p/subscriptions/s",
            _long(2) + b"m1",
            _long(1_700_000_000_000_000),
            _long(0),  # attributes: an empty map
            _long(data_bytes),
        ]
    )
    return head + bytes(data_bytes)


def _container(codec: str, block: bytes, count: int = 1) -> bytes:
    """A valid header for ``codec`` (written by fastavro) and one hand-made block."""
    header = io.BytesIO()
    fastavro.writer(header, fastavro.parse_schema(PUBSUB_AVRO_SCHEMA), [], codec=codec)
    head = header.getvalue()
    sync = head[-16:]
    return head + _long(count) + _long(len(block)) + block + sync


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


BOMB_EXPANDS_TO = 4 * MAX_BLOCK_BYTES
"""What an Avro bomb here expands to: far past the block limit, so a reader that
inflated it whole would grow by it (the bounded one stops at the limit)."""


@functools.cache
def _bomb(codec: str) -> bytes:
    """One record whose data is ``BOMB_EXPANDS_TO`` zero bytes, compressed as a stream
    (the zeros are never all in memory here)."""
    packer = {
        "deflate": lambda: zlib.compressobj(9, zlib.DEFLATED, -15),
        "bzip2": bz2.BZ2Compressor,
        "xz": lambda: lzma.LZMACompressor(format=lzma.FORMAT_XZ),
    }[codec]()
    head = _record(0)[:-1] + _long(BOMB_EXPANDS_TO)  # the data's length, then the zeros
    parts = [packer.compress(head)]
    chunk = bytes(8 << 20)
    for _ in range(BOMB_EXPANDS_TO // len(chunk)):
        parts.append(packer.compress(chunk))
    parts.append(packer.flush())
    return _container(codec, b"".join(parts))


@pytest.mark.parametrize("codec", ["deflate", "bzip2", "xz"])
def test_an_avro_block_that_expands_past_the_limit_is_refused_naming_it(codec: str) -> None:
    data = _bomb(codec)
    assert len(data) < MAX_BLOCK_BYTES // 100  # small on the wire
    source = _source(data, FileFormat.AVRO, "gs://landing/credit/stream-bomb.avro")
    with pytest.raises(BadInputError) as caught:
        list(stream_records(source, ValidationConfig()))
    error = caught.value
    assert error.uri == "gs://landing/credit/stream-bomb.avro"
    assert error.location == "block 1"
    assert f"expands past {MAX_BLOCK_BYTES} bytes" in str(error)
    assert codec in str(error)


@pytest.mark.parametrize("codec", ["null", "deflate", "bzip2", "xz"])
def test_honest_files_of_every_codec_read_as_before(codec: str) -> None:
    messages = [Message(f"id{i}", WHEN, {"k": "v"}, ROW) for i in range(3000)]
    buffer = io.BytesIO()
    records = [
        {
            "subscription_name": "projects/p/subscriptions/s",
            "message_id": m.message_id,
            "publish_time": m.publish_time,
            "attributes": m.attributes,
            "data": m.data,
        }
        for m in messages
    ]
    fastavro.writer(
        buffer, fastavro.parse_schema(PUBSUB_AVRO_SCHEMA), records, codec=codec, sync_interval=4096
    )
    source = _source(buffer.getvalue(), FileFormat.AVRO, "gs://landing/credit/stream-ok.avro")
    read = list(stream_records(source, ValidationConfig()))
    assert [r.message_id for r in read] == [m.message_id for m in messages]
    assert {r.data for r in read} == {ROW}


def test_the_local_writers_files_read_through_the_bounded_reader() -> None:
    data = avro_file_bytes("projects/p/subscriptions/s", [Message("1", WHEN, {}, ROW)])
    rows = [
        row
        for batch in read_batches(
            _source(data, FileFormat.AVRO, "gs://l/x.avro"), ValidationConfig()
        )
        for row in batch.to_pylist()
    ]
    assert rows == [{"age": 40, "region": "north"}]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d[:-3], "sync marker"),  # truncated sync
        (lambda d: d[:-20], "ends inside a block"),
        (lambda d: d + b"\x02", "ends inside a block header"),
    ],
)
def test_a_truncated_or_corrupt_container_is_bad_input(mutate: object, problem: str) -> None:
    data = avro_file_bytes("projects/p/subscriptions/s", [Message("1", WHEN, {}, ROW)])
    source = _source(mutate(data), FileFormat.AVRO, "gs://l/x.avro")  # type: ignore[operator]
    with pytest.raises(BadInputError, match=problem):
        list(stream_records(source, ValidationConfig()))


def test_a_block_claiming_more_bytes_than_the_limit_is_refused_before_reading() -> None:
    header = io.BytesIO()
    fastavro.writer(header, fastavro.parse_schema(PUBSUB_AVRO_SCHEMA), [])
    data = header.getvalue() + _long(1) + _long(1 << 40)  # claims a terabyte, holds none
    with pytest.raises(BadInputError, match=r"over the .*-byte limit on an Avro block") as caught:
        list(stream_records(_source(data, FileFormat.AVRO, "gs://l/x.avro"), ValidationConfig()))
    assert caught.value.location == "block 1"


def test_an_impossible_record_count_is_refused() -> None:
    data = _container("null", _record(10), count=1 << 40)
    with pytest.raises(BadInputError, match="claims 1099511627776 records"):
        list(stream_records(_source(data, FileFormat.AVRO, "gs://l/x.avro"), ValidationConfig()))


def test_a_huge_header_is_refused() -> None:
    data = b"Obj\x01" + _long(1) + _long(len("avro.schema")) + b"avro.schema" + _long(1 << 40)
    with pytest.raises(BadInputError, match="header is larger than"):
        list(stream_records(_source(data, FileFormat.AVRO, "gs://l/x.avro"), ValidationConfig()))


def test_a_codec_the_functions_cannot_read_is_refused_by_name() -> None:
    header = io.BytesIO()
    fastavro.writer(header, fastavro.parse_schema(PUBSUB_AVRO_SCHEMA), [])
    data = header.getvalue().replace(b"\x08null", b"\x0cbroken")  # avro.codec value
    with pytest.raises(BadInputError, match="codec 'broken' is not read here"):
        list(stream_records(_source(data, FileFormat.AVRO, "gs://l/x.avro"), ValidationConfig()))


def test_the_total_limit_counts_decompressed_blocks() -> None:
    data = _container("deflate", _deflate(_record(4096)))
    config = ValidationConfig(max_uncompressed_bytes=1024)
    with pytest.raises(BadInputError, match="max_uncompressed_bytes") as caught:
        list(stream_records(_source(data, FileFormat.AVRO, "gs://l/x.avro"), config))
    assert caught.value.location == "block 1"


def _parquet(table: pa.Table, **options: object) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


@functools.cache
def _dictionary_bomb(*, store_schema: bool = True) -> bytes:
    """About 650 bytes: one 1 MiB string repeated by 65,536 indices (64 GiB decoded).
    With the Arrow schema stored pyarrow reads the column as a dictionary; without it as
    strings (the reader keeps the dictionary, measures, then decodes)."""
    value = "x" * (1 << 20)
    column = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(65536, dtype=np.int32)), pa.array([value])
    )
    return _parquet(
        pa.table({"s": column}),
        compression="zstd",
        dictionary_pagesize_limit=4 << 20,
        store_schema=store_schema,
    )


@functools.cache
def _page_bomb() -> bytes:
    """A few KiB: one binary value of MAX_COLUMN_CHUNK_BYTES + 1 zero bytes, zstd."""
    value = pa.array([bytes(MAX_COLUMN_CHUNK_BYTES + 1)], pa.binary())
    return _parquet(pa.table({"b": value}), compression="zstd", use_dictionary=False)


@pytest.mark.parametrize("store_schema", [True, False])
def test_a_parquet_dictionary_bomb_is_refused_before_decoding(store_schema: bool) -> None:
    data = _dictionary_bomb(store_schema=store_schema)
    assert len(data) < 4096
    source = _source(data, FileFormat.PARQUET, "gs://landing/credit/bomb.parquet")
    with pytest.raises(BadInputError) as caught:
        list(read_batches(source, ValidationConfig()))
    error = caught.value
    assert error.uri == "gs://landing/credit/bomb.parquet"
    assert error.location == "row group 1"
    assert f"more than {MAX_DECODED_BATCH_BYTES} bytes" in str(error)
    assert "column 's'" in str(error)


def test_a_parquet_page_bomb_is_refused_from_the_footer() -> None:
    data = _page_bomb()
    assert len(data) < 64 * 1024
    source = _source(data, FileFormat.PARQUET, "gs://landing/credit/page.parquet")
    with pytest.raises(BadInputError) as caught:
        list(read_batches(source, ValidationConfig()))
    assert caught.value.location == "row group 1, column 'b'"
    assert f"over the {MAX_COLUMN_CHUNK_BYTES}-byte limit" in str(caught.value)


def test_a_parquet_file_over_the_total_limit_is_refused() -> None:
    data = _parquet(pa.table({"a": pa.array(range(100_000))}))
    config = ValidationConfig(max_uncompressed_bytes=1024)
    with pytest.raises(BadInputError, match="max_uncompressed_bytes"):
        list(read_batches(_source(data, FileFormat.PARQUET, "gs://l/x.parquet"), config))


def test_honest_parquet_strings_come_back_decoded_as_before() -> None:
    table = pa.table(
        {
            "region": pa.array(["north", "south", None] * 40_000),
            "raw": pa.array([b"ab", b"c", b""] * 40_000, pa.binary()),
            "n": pa.array(range(120_000)),
        }
    )
    data = _parquet(table, compression="snappy", row_group_size=50_000)
    batches = list(
        read_batches(_source(data, FileFormat.PARQUET, "gs://l/x.parquet"), ValidationConfig())
    )
    read = pa.Table.from_batches(batches)
    assert read.schema.field("region").type == pa.string()
    assert read.schema.field("raw").type == pa.binary()
    assert read.equals(table)


_MEASURE = textwrap.dedent(
    """
    import contextlib, io, resource, sys
    sys.path.insert(0, {tests!r})
    from cascade.core.errors import BadInputError
    from cascade.core.validation_config import ValidationConfig
    from cascade.validation.names import FileFormat
    from cascade.validation.reader import read_batches
    from cascade.validation.source import DataSource
    data = open(sys.argv[1], "rb").read()
    fmt = FileFormat.AVRO if sys.argv[1].endswith(".avro") else FileFormat.PARQUET
    source = DataSource(uri="gs://l/" + sys.argv[1].rsplit("/", 1)[-1], file_format=fmt,
                        size=len(data), open=lambda: contextlib.nullcontext(io.BytesIO(data)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        for _ in read_batches(source, ValidationConfig()):
            pass
        print("READ")
    except BadInputError as error:
        print("REFUSED", error.location)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print("GROWN_KIB", grown)
    """
)


@pytest.mark.parametrize(
    "kind",
    [
        "avro-bzip2",
        "avro-deflate",
        "parquet-dictionary",
        "parquet-plain-dictionary",
        "parquet-page",
    ],
)
def test_a_bomb_is_refused_in_bounded_memory(kind: str, tmp_path: Path) -> None:
    """In a fresh process: the peak memory grows by less than the bomb's expansion."""
    if kind.startswith("avro"):
        path = tmp_path / "bomb.avro"
        path.write_bytes(_bomb(kind.split("-")[1]))
        expands_to = BOMB_EXPANDS_TO
    else:
        path = tmp_path / "bomb.parquet"
        path.write_bytes(
            _page_bomb()
            if kind == "parquet-page"
            else _dictionary_bomb(store_schema=kind == "parquet-dictionary")
        )
        expands_to = MAX_COLUMN_CHUNK_BYTES
    script = _MEASURE.format(tests=str(REPO / "tests"))
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    assert "REFUSED" in lines, done.stdout
    grown_bytes = int(lines["GROWN_KIB"]) * 1024
    assert grown_bytes < expands_to // 2, f"{kind}: peak grew by {grown_bytes} bytes"


def _memory_bytes(text: str) -> int:
    units = {"Mi": 1 << 20, "Gi": 1 << 30}
    return int(text[:-2]) * units[text[-2:]]


def test_the_limits_fit_the_memory_of_every_function_that_reads_landed_files() -> None:
    """A block is held about three times (compressed, decompressed, decoded), a column
    chunk and a decoded batch once each: all inside the functions' memory."""
    topology = load_topology(REPO / "infra" / "topology.yaml")
    for name in ("validate", "transform"):
        memory = _memory_bytes(topology.functions[name].memory)
        assert memory // 4 >= 4 * MAX_BLOCK_BYTES, name
        assert memory // 2 >= MAX_COLUMN_CHUNK_BYTES + MAX_DECODED_BATCH_BYTES, name


def test_an_empty_block_is_read_as_fastavro_reads_it() -> None:
    data = avro_file_bytes("projects/p/subscriptions/s", [Message("1", WHEN, {}, ROW)])
    data += _long(0) + _long(0) + data[-16:]  # a block of no records (the spec allows it)
    source = _source(data, FileFormat.AVRO, "gs://l/x.avro")
    assert [r.message_id for r in stream_records(source, ValidationConfig())] == ["1"]
    assert sum(1 for _ in fastavro.reader(io.BytesIO(data))) == 1
