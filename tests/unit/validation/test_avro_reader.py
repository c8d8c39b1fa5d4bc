"""Stream files read as rows: hostile records split out with their reason, never dropped
silently; rows and rejections complementary; files that are no stream file refused."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from datetime import UTC, datetime

import fastavro
import pyarrow as pa
import pytest

from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.localcloud.gcs_subscriber import Message, avro_file_bytes
from cascade.validation.avro_reader import (
    MESSAGE_ID_COLUMN,
    read_avro_batches,
    record_problem,
    rejected_records,
)
from cascade.validation.names import FileFormat
from cascade.validation.reader import read_batches
from cascade.validation.source import DataSource
from cascade.validation.statistics import compute_statistics
from cascade.validation.widening import ColumnWidening

WHEN = datetime(2026, 12, 1, tzinfo=UTC)
GOOD = {"age": 40, "income": 1200.5, "region": "north"}


def _source(messages: list[bytes], uri: str = "gs://landing/credit/stream-x.avro") -> DataSource:
    data = avro_file_bytes(
        "projects/p/subscriptions/s",
        [Message(f"id{i}", WHEN, {}, body) for i, body in enumerate(messages, start=1)],
    )
    return _bytes_source(data, uri)


def _bytes_source(data: bytes, uri: str = "gs://landing/credit/x.avro") -> DataSource:
    return DataSource(
        uri=uri,
        file_format=FileFormat.AVRO,
        size=len(data),
        open=lambda: contextlib.nullcontext(io.BytesIO(data)),
    )


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _rows(source: DataSource, types: dict[str, pa.DataType] | None = None) -> list[dict]:
    batches = read_batches(source, ValidationConfig(), types or {})
    return [row for batch in batches for row in batch.to_pylist()]


HOSTILE = [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, got list"),
    (b'"text"', "must be a JSON object, got str"),
    (b"{}", "empty JSON object"),
    (_json({**GOOD, "age": {"years": 40}}), "holds a dict"),
    (_json({**GOOD, "tags": [1, 2]}), "holds a list"),
    (b'{"age": NaN}', "NaN is not a JSON number"),
    (b'{"age": Infinity}', "Infinity is not a JSON number"),
    (b"", "not valid JSON"),
]


@pytest.mark.parametrize(("data", "reason"), HOSTILE)
def test_a_hostile_record_is_split_out_with_its_reason(data: bytes, reason: str) -> None:
    source = _source([_json(GOOD), data, _json(GOOD)])

    rejected = rejected_records(source, ValidationConfig())

    assert len(_rows(source)) == 2
    assert [(r.position, r.message_id) for r in rejected] == [(2, "id2")]
    assert reason in rejected[0].reason


def test_types_never_split_a_record_out_they_widen_the_column() -> None:
    # What a record is split out for depends on the record alone, so validate (schema
    # FLOAT and BYTES fixed) and transform (every column fixed) agree on the rows.
    types = {"income": pa.float64(), "region": pa.string()}
    source = _source([_json(GOOD), _json({**GOOD, "region": 7}), _json({**GOOD, "age": 40.5})])
    assert rejected_records(source, ValidationConfig()) == []
    rows = _rows(source, types)
    assert [row["region"] for row in rows] == ["north", "7", "north"]  # text, as CSV reads it
    assert [row["age"] for row in rows] == [40.0, 40.0, 40.5]  # int64 widened to float64


def test_a_string_in_a_fixed_number_column_widens_it_for_the_validator() -> None:
    source = _source([_json(GOOD), _json({**GOOD, "income": "lots"})])
    with pytest.raises(ColumnWidening) as widening:
        _rows(source, {"income": pa.float64()})
    assert (widening.value.column, widening.value.new_type) == ("income", pa.string())


def test_unicode_missing_and_extra_fields_are_rows() -> None:
    source = _source(
        [
            _json({**GOOD, "region": "nörd ✓ 北"}),
            _json({"age": 41}),  # missing fields are nulls; the validator judges presence
            _json({**GOOD, "extra": "x"}),  # a new column, judged by the dataset's schema
        ]
    )
    rows = _rows(source)
    assert rows[0]["region"] == "nörd ✓ 北"
    assert rows[1] == {"age": 41, "income": None, "region": None, "extra": None}
    assert rows[2]["extra"] == "x"
    assert rejected_records(source, ValidationConfig()) == []


def test_with_the_stream_s_fields_a_record_naming_another_is_split_out() -> None:
    """A field the stream's schema does not name costs its record (a missing one is a
    null, as without the schema: Pub/Sub refuses those at publish)."""
    source = replace(
        _source(
            [
                _json(GOOD),
                _json({**GOOD, "extra": "x"}),
                _json({"age": 41}),
                _json({**GOOD, "a": 1, "b": 2}),
            ]
        ),
        record_fields=frozenset(GOOD),
    )

    rejected = rejected_records(source, ValidationConfig())

    assert [(r.position, r.reason) for r in rejected] == [
        (2, "field 'extra' is not in the stream's schema"),
        (4, "field 'a' is not in the stream's schema (and 1 more)"),
    ]
    assert [row["age"] for row in _rows(source)] == [40, 41]
    assert "extra" not in _rows(source)[0]


def test_a_huge_reason_is_cut() -> None:
    _, reason = record_problem(_json({"x" * 5000: {"a": 1}}))
    assert len(reason) <= 300


def test_message_ids_come_with_the_rows_when_asked() -> None:
    source = _source([_json(GOOD), b"bad", _json(GOOD)])
    batches = list(read_avro_batches(source, ValidationConfig(), {}, with_message_ids=True))
    assert batches[0].column(MESSAGE_ID_COLUMN).to_pylist() == ["id1", "id3"]


def test_a_file_with_no_usable_record_is_bad_input_naming_the_first() -> None:
    source = _source([b"bad", b"[]"])
    with pytest.raises(BadInputError, match=r"no record .* usable row \(first: record 1: "):
        _rows(source)


@pytest.mark.parametrize(
    "data",
    [b"not avro at all", b"Obj\x01garbage", b""],
)
def test_bytes_that_are_no_avro_file_are_bad_input(data: bytes) -> None:
    with pytest.raises(BadInputError, match=r"Avro|empty"):
        _rows(_bytes_source(data))


def test_an_avro_file_without_the_message_fields_is_refused() -> None:
    buffer = io.BytesIO()
    schema = {"type": "record", "name": "r", "fields": [{"name": "x", "type": "long"}]}
    fastavro.writer(buffer, fastavro.parse_schema(schema), [{"x": 1}])
    with pytest.raises(BadInputError, match="lacks message_id, data"):
        _rows(_bytes_source(buffer.getvalue()))


def test_the_uncompressed_limit_holds() -> None:
    source = _source([_json({"x": "y" * 5000})] * 3)
    config = ValidationConfig(max_uncompressed_bytes=10_000)
    with pytest.raises(BadInputError, match="max_uncompressed_bytes"):
        list(read_batches(source, config, {}))


def test_a_column_that_widens_restarts_the_statistics() -> None:
    config = ValidationConfig(parquet_batch_rows=1024)
    messages = [_json({"n": 1})] * 1024 + [_json({"n": 2.5})] + [_json({"n": "x"})]
    summary = compute_statistics(_source(messages), config)
    assert summary.num_examples == 1026


def test_statistics_count_only_the_usable_rows() -> None:
    summary = compute_statistics(_source([_json(GOOD), b"bad", _json(GOOD)]), ValidationConfig())
    assert summary.num_examples == 2
