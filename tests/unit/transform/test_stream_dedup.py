"""Duplicates of at-least-once delivery removed by message id before training: a message
written into two stream files trains once, whichever files hold it; unusable records
never reach the shards; CSV files beside stream files are untouched."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from cascade.core.fakes import MemoryArtifactStore
from cascade.core.validation_config import ValidationConfig
from cascade.localcloud.gcs_subscriber import Message, avro_file_bytes
from cascade.transform.materialize import file_batches, write_split_shards
from cascade.transform.spec import SnapshotFile, SplitSpec
from tests.unit.transform.landing import MemoryLanding

SCHEMA = pa.schema([pa.field("x", pa.float64()), pa.field("y", pa.string())])
WHEN = datetime(2026, 12, 1, tzinfo=UTC)
SPLIT = SplitSpec(eval_fraction=0.2, salt="cascade:d")


def _stream(landing: MemoryLanding, name: str, ids: range, bad: int = 0) -> SnapshotFile:
    messages = [
        Message(f"m{i}", WHEN, {}, json.dumps({"x": float(i), "y": str(i % 2)}).encode())
        for i in ids
    ]
    messages += [Message(f"bad{i}", WHEN, {}, b"not json") for i in range(bad)]
    uri = landing.put(f"d/{name}", avro_file_bytes("projects/p/subscriptions/s", messages), 1)
    return SnapshotFile(uri=uri, generation=1, rows=len(ids))


def _csv(landing: MemoryLanding, name: str, values: range) -> SnapshotFile:
    data = ("x,y\n" + "".join(f"{v},{v % 2}\n" for v in values)).encode()
    return SnapshotFile(uri=landing.put(f"d/{name}", data, 1), generation=1, rows=len(values))


def _xs(store: MemoryArtifactStore, names: list[str]) -> list[float]:
    values: list[float] = []
    for name in names:
        stored = store.read(name)
        assert stored is not None
        values += pq.read_table(io.BytesIO(stored.data)).column("x").to_pylist()
    return values


def test_a_message_in_two_files_trains_once() -> None:
    landing, store = MemoryLanding(), MemoryArtifactStore("cascade-artifacts")
    first = _stream(landing, "stream-a.avro", range(0, 600))
    second = _stream(landing, "stream-b.avro", range(500, 1000), bad=3)  # 100 redelivered
    plain = _csv(landing, "day-1.csv", range(0, 50))  # the same values, no message ids

    shards = write_split_shards(
        store,
        [first, second, plain],
        landing,
        schema=SCHEMA,
        split=SPLIT,
        folder="runs/r/transform",
        config=ValidationConfig(),
    )

    xs = _xs(store, shards.train_names) + _xs(store, shards.eval_names)
    assert shards.duplicate_rows == 100
    assert shards.train_rows + shards.eval_rows == 1000 + 50
    assert sorted(xs) == sorted([float(i) for i in range(1000)] + [float(i) for i in range(50)])
    stored = store.read(shards.train_names[0])
    assert stored is not None
    assert pq.read_schema(io.BytesIO(stored.data)).names == SCHEMA.names  # no message id


def test_a_message_twice_in_one_file_trains_once() -> None:
    landing = MemoryLanding()
    doubled = _stream(landing, "stream-a.avro", range(0, 10))
    again = avro_file_bytes(
        "projects/p/subscriptions/s",
        [Message("m1", WHEN, {}, b'{"x": 1.0, "y": "1"}')] * 2
        + [Message("m2", WHEN, {}, b'{"x": 2.0, "y": "0"}')],
    )
    landing.objects[(doubled.uri, 1)] = again

    tables = list(file_batches(doubled, landing, SCHEMA, ValidationConfig()))

    assert sum(table.num_rows for table in tables) == 2
    assert tables[0].column_names == SCHEMA.names


def test_a_file_of_messages_all_read_before_adds_no_rows() -> None:
    landing, store = MemoryLanding(), MemoryArtifactStore("cascade-artifacts")
    first = _stream(landing, "stream-a.avro", range(0, 300))
    again = _stream(landing, "stream-b.avro", range(0, 100))  # a second delivery, whole

    shards = write_split_shards(
        store,
        [first, again],
        landing,
        schema=SCHEMA,
        split=SPLIT,
        folder="runs/r/transform",
        config=ValidationConfig(),
        newest=[again],
        newest_column="__newest",
    )

    assert shards.duplicate_rows == 100
    assert shards.train_rows + shards.eval_rows == 300
    assert shards.file_eval_rows[1] == 0
