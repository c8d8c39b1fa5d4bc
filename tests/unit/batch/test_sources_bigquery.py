"""A BigQuery table as a batch's source: read with the Storage Read API (Arrow over gRPC)
from the local BigQuery, every value as ``tabledata.list`` (the REST path it replaced)
gives it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import google.cloud.bigquery as bigquery
import pytest
from google.cloud.bigquery_storage_v1 import BigQueryReadClient, types

from cascade.batch.sources import BigQueryTableSource
from cascade.core.errors import BadInputError
from cascade.core.warehouse import insert_rows, load_rows, table_id
from cascade.core.warehouse_read import make_bigquery_read_client
from cascade.localcloud.local_settings import LocalCloudSettings
from tests.bigquery_emulator import bigquery_client, bigquery_local  # noqa: F401

SCHEMA = [
    bigquery.SchemaField("key", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("count", "INT64"),
    bigquery.SchemaField("score", "FLOAT64"),
    bigquery.SchemaField("ok", "BOOL"),
    bigquery.SchemaField("city", "STRING"),
    bigquery.SchemaField("at", "TIMESTAMP"),
    bigquery.SchemaField("day", "DATE"),
    bigquery.SchemaField("amount", "NUMERIC"),
]
ROWS: list[dict[str, Any]] = [
    {
        "key": "a",
        "count": 3,
        "score": 0.25,
        "ok": True,
        "city": "Zürich",
        "at": "2026-01-02T03:04:05.123456Z",
        "day": "2026-01-02",
        "amount": "1.25",
    },
    {  # every nullable column NULL
        "key": "b",
        "count": None,
        "score": None,
        "ok": None,
        "city": None,
        "at": None,
        "day": None,
        "amount": None,
    },
    {
        "key": "c",
        "count": -9007199254740993,  # not exact as a float: INT64 must stay int
        "score": -1e300,
        "ok": False,
        "city": "",
        "at": "1970-01-01T00:00:00Z",
        "day": "0001-01-01",
        "amount": "-0.000000001",
    },
    {"key": "d", "count": 0, "score": 0.0, "ok": True, "city": "x"},  # missing: NULL
]
MANY_ROWS = 70_000
"""More rows than one ReadRows message carries (the local BigQuery sends 65,536)."""


def _table(
    client: bigquery.Client, rows: list[dict[str, Any]], schema: list[Any] | None = None
) -> str:
    dataset = client.create_dataset(f"src_{uuid.uuid4().hex[:8]}", exists_ok=True)
    name = table_id(client.project, dataset.dataset_id, "instances")
    table = client.create_table(bigquery.Table(name, schema=schema or SCHEMA))
    if rows:
        insert_rows(client, table, rows)
    return name


def _rest_rows(client: bigquery.Client, name: str) -> list[dict[str, Any]]:
    """What the source read before: ``tabledata.list`` pages, converted by Arrow."""
    found = client.list_rows(client.get_table(name), page_size=2)
    return [values for batch in found.to_arrow_iterable() for values in batch.to_pylist()]


@pytest.fixture
def read_client(bigquery_local: LocalCloudSettings) -> Iterator[BigQueryReadClient]:  # noqa: F811
    client = make_bigquery_read_client(bigquery_local.runtime_settings())
    yield client
    client.transport.close()


@pytest.fixture(scope="module")
def many(bigquery_client: bigquery.Client) -> str:  # noqa: F811
    """A table of ``MANY_ROWS`` rows, loaded by one load job."""
    dataset = bigquery_client.create_dataset(f"many_{uuid.uuid4().hex[:8]}")
    name = table_id(bigquery_client.project, dataset.dataset_id, "instances")
    schema = [
        bigquery.SchemaField("key", "STRING"),
        bigquery.SchemaField("n", "INT64"),
        bigquery.SchemaField("half", "FLOAT64"),
    ]
    table = bigquery_client.create_table(bigquery.Table(name, schema=schema))
    rows = [{"key": f"k{index:06d}", "n": index, "half": index / 2} for index in range(MANY_ROWS)]
    assert load_rows(bigquery_client, table, rows, job_id=f"many_{uuid.uuid4().hex}")
    return name


def test_every_type_and_null_reads_as_tabledata_list_reads_it(
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    name = _table(bigquery_client, ROWS)
    source = BigQueryTableSource(bigquery_client, name)

    read = list(source.rows())

    rest = _rest_rows(bigquery_client, name)
    assert [row.values for row in read] == rest
    for mine, theirs in zip(read, rest, strict=True):  # and the same Python types
        assert {k: type(v) for k, v in mine.values.items()} == {
            k: type(v) for k, v in theirs.items()
        }
    assert [row.number for row in read] == [0, 1, 2, 3]
    assert {row.origin for row in read} == {f"bq://{name}"}
    first, null, last, missing = (row.values for row in read)
    assert list(first) == [field.name for field in SCHEMA]
    assert first["count"] == 3
    assert isinstance(first["count"], int)
    assert first["score"] == 0.25
    assert first["ok"] is True
    assert first["city"] == "Zürich"
    assert null == {"key": "b", **{field.name: None for field in SCHEMA[1:]}}
    assert last["count"] == -9007199254740993
    assert last["ok"] is False
    assert last["city"] == ""
    assert missing["at"] is None
    assert not any(row.text or row.problem for row in read)


def test_it_reads_through_one_arrow_read_session_not_tabledata_list(
    bigquery_client: bigquery.Client,  # noqa: F811
    read_client: BigQueryReadClient,
) -> None:
    name = _table(bigquery_client, ROWS)
    source = BigQueryTableSource(bigquery_client, name, read_client=read_client)
    with (
        mock.patch.object(
            read_client, "create_read_session", wraps=read_client.create_read_session
        ) as sessions,
        mock.patch.object(bigquery.Client, "list_rows", side_effect=AssertionError("REST")),
    ):
        assert len(list(source.rows())) == len(ROWS)
    (call,) = sessions.call_args_list
    project, dataset, table = name.split(".")
    assert call.kwargs["parent"] == f"projects/{bigquery_client.project}"
    assert call.kwargs["max_stream_count"] == 1  # one stream: one order on every read
    session = call.kwargs["read_session"]
    assert session.table == f"projects/{project}/datasets/{dataset}/tables/{table}"
    assert session.data_format == types.DataFormat.ARROW
    assert list(session.read_options.selected_fields) == [field.name for field in SCHEMA]
    # A read client passed in stays open for its owner.
    assert len(list(BigQueryTableSource(bigquery_client, name, read_client=read_client).rows()))


def test_only_the_columns_asked_for_are_read_in_the_tables_order(
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    name = _table(bigquery_client, ROWS)
    source = BigQueryTableSource(bigquery_client, name, columns=["score", "key"])
    assert source.columns == ["key", "score"]
    assert [row.values for row in source.rows()] == [
        {"key": row["key"], "score": row.get("score")} for row in ROWS
    ]
    with pytest.raises(BadInputError, match=r"no such column\(s\) \['nope'\]"):
        BigQueryTableSource(bigquery_client, name, columns=["key", "nope"])


def test_a_source_narrowed_to_a_models_inputs_reads_only_those_it_has(
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    name = _table(bigquery_client, ROWS)
    source = BigQueryTableSource(bigquery_client, name)
    source.read_only({"score", "key", "not_in_the_table"})
    assert source.columns == ["key", "score"]
    assert [row.values for row in source.rows()] == [
        {"key": row["key"], "score": row.get("score")} for row in ROWS
    ]
    everything = BigQueryTableSource(bigquery_client, name)
    before = everything.columns
    everything.read_only({"none_of_them"})
    assert everything.columns == before  # never an empty selection (BigQuery: all)


def test_an_empty_table_reads_no_rows(bigquery_client: bigquery.Client) -> None:  # noqa: F811
    name = _table(bigquery_client, [])
    assert list(BigQueryTableSource(bigquery_client, name).rows()) == []
    assert _rest_rows(bigquery_client, name) == []


def test_a_table_of_several_record_batches_is_read_whole_and_in_order(
    bigquery_client: bigquery.Client,  # noqa: F811
    read_client: BigQueryReadClient,
    many: str,
) -> None:
    source = BigQueryTableSource(bigquery_client, many, read_client=read_client, page_size=999)
    batches = list(source._batches(read_client))
    assert len(batches) >= 2
    assert sum(batch.num_rows for batch in batches) == MANY_ROWS

    read = list(source.rows())

    assert [row.number for row in read] == list(range(MANY_ROWS))
    assert [row.values for row in read] == [
        {"key": f"k{index:06d}", "n": index, "half": index / 2} for index in range(MANY_ROWS)
    ]


def test_a_source_reads_again_with_a_fresh_client_each_time(
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    name = _table(bigquery_client, ROWS)
    source = BigQueryTableSource(bigquery_client, name)
    with mock.patch.object(
        BigQueryReadClient,
        "create_read_session",
        autospec=True,
        side_effect=BigQueryReadClient.create_read_session,
    ) as sessions:
        first = [row.values for row in source.rows()]
        second = [row.values for row in source.rows()]
    assert first == second == _rest_rows(bigquery_client, name)
    assert sessions.call_count == 2
    clients = {id(call.args[0]) for call in sessions.call_args_list}
    assert len(clients) == 2
