"""Rows into BigQuery: the local BigQuery with the real client, and the checks that make
it refuse what BigQuery's insertAll refuses (it accepts unknown fields, missing REQUIRED
fields and wrongly typed values silently)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import google.cloud.bigquery as bigquery
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.bigquery_storage_v1 import types

from cascade.core.errors import InvalidConfigError
from cascade.core.settings import Settings
from cascade.core.warehouse import (
    MAX_INSERT_ROWS,
    JsonText,
    WarehouseError,
    check_row,
    insert_rows,
    load_rows,
    make_bigquery_client,
    table_id,
)
from cascade.core.warehouse_read import make_bigquery_read_client, read_client_for
from cascade.localcloud.local_settings import LocalCloudSettings
from tests.bigquery_emulator import bigquery_client, bigquery_local  # noqa: F401

SCHEMA = [
    bigquery.SchemaField("key", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("model_version", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("score", "FLOAT64"),
    bigquery.SchemaField("count", "INT64"),
    bigquery.SchemaField("ok", "BOOL"),
    bigquery.SchemaField("predicted_at", "TIMESTAMP"),
    bigquery.SchemaField("prediction", "JSON"),
    bigquery.SchemaField("tags", "STRING", mode="REPEATED"),
]
GOOD: dict[str, Any] = {
    "key": "a",
    "model_version": "1",
    "score": 0.25,
    "count": 3,
    "ok": True,
    "predicted_at": "2026-11-30T12:00:00Z",
    "prediction": '{"p": 0.25}',
    "tags": ["x"],
}


@pytest.fixture
def table(bigquery_client: bigquery.Client) -> bigquery.Table:  # noqa: F811
    dataset = bigquery_client.create_dataset(f"t_{uuid.uuid4().hex[:8]}", exists_ok=True)
    name = table_id(bigquery_client.project, dataset.dataset_id, "rows")
    return bigquery_client.create_table(bigquery.Table(name, schema=SCHEMA))


def test_rows_inserted_are_read_back_by_sql(
    bigquery_client: bigquery.Client,  # noqa: F811
    table: bigquery.Table,
) -> None:
    rows = [{**GOOD, "key": f"k{index}", "score": index / 10} for index in range(3)]
    insert_rows(bigquery_client, table, rows)
    found = bigquery_client.query(
        f"SELECT key, score, JSON_VALUE(prediction, '$.p') AS p "
        f"FROM `{table.project}.{table.dataset_id}.{table.table_id}` ORDER BY key"
    ).result()
    assert [(row["key"], row["score"], row["p"]) for row in found] == [
        ("k0", 0.0, "0.25"),
        ("k1", 0.1, "0.25"),
        ("k2", 0.2, "0.25"),
    ]


def test_more_rows_than_one_request_holds_are_sent_in_batches(
    bigquery_client: bigquery.Client,  # noqa: F811
    table: bigquery.Table,
) -> None:
    total = MAX_INSERT_ROWS * 2 + 7
    insert_rows(bigquery_client, table, [{**GOOD, "key": str(i)} for i in range(total)])
    counted = bigquery_client.query(
        f"SELECT COUNT(*) AS n FROM `{table.project}.{table.dataset_id}.{table.table_id}`"
    ).result()
    assert next(iter(counted))["n"] == total


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({**GOOD, "colour": "red"}, "colour", "no such field: colour."),
        ({k: v for k, v in GOOD.items() if k != "key"}, "key", "Missing required field: key."),
        ({**GOOD, "key": None}, "key", "Missing required field: key."),
        ({**GOOD, "count": "three"}, "count", "cannot convert value to int64"),
        ({**GOOD, "count": 1.5}, "count", "cannot convert value to int64"),
        ({**GOOD, "ok": "yes"}, "ok", "cannot convert value to bool"),
        ({**GOOD, "score": float("nan")}, "score", "cannot convert value to float64"),
        ({**GOOD, "score": True}, "score", "cannot convert value to float64"),
        ({**GOOD, "predicted_at": "yesterday"}, "predicted_at", "cannot convert value"),
        ({**GOOD, "key": 7}, "key", "cannot convert value to string"),
        ({**GOOD, "tags": "x"}, "tags", "a repeated field takes a list"),
        ({**GOOD, "tags": ["x", 3]}, "tags", "cannot convert value to string"),
    ],
)
def test_a_row_bigquery_would_refuse_is_refused_naming_the_row_and_field(
    bigquery_client: bigquery.Client,  # noqa: F811
    table: bigquery.Table,
    row: dict[str, Any],
    field: str,
    message: str,
) -> None:
    with pytest.raises(WarehouseError) as caught:
        insert_rows(bigquery_client, table, [GOOD, row])
    (error,) = caught.value.errors
    assert (error.index, error.field) == (1, field)
    assert error.message.startswith(message)
    assert "row 1" in str(caught.value)
    # Nothing of a refused batch is written, the good row included.
    counted = bigquery_client.query(
        f"SELECT COUNT(*) AS n FROM `{table.project}.{table.dataset_id}.{table.table_id}`"
    ).result()
    assert next(iter(counted))["n"] == 0


def test_nan_and_infinity_go_as_bigquerys_strings() -> None:
    for value in ("NaN", "Infinity", "-Infinity"):
        assert check_row(SCHEMA, {**GOOD, "score": value}, 0) == []


@pytest.mark.parametrize(
    ("dataset", "table"),
    [
        ("a;DROP TABLE x", "t"),
        ("ok", "t` UNION SELECT"),
        ("", "t"),
        ("ok", "1starts_with_digit"),
        ("../../etc", "t"),
        ("ok", "x" * 1025),
    ],
)
def test_names_that_are_not_bigquery_names_are_refused(dataset: str, table: str) -> None:
    with pytest.raises(ValueError, match="not a valid BigQuery"):
        table_id("cascade-local", dataset, table)


def test_the_emulator_keeps_its_tables_on_disk(
    bigquery_local: LocalCloudSettings,  # noqa: F811
) -> None:
    data = bigquery_local.state_dir / "bigquery" / "data"
    assert any(data.iterdir())


def test_a_load_appends_json_values_as_json_and_runs_its_job_once(
    bigquery_client: bigquery.Client,  # noqa: F811
    table: bigquery.Table,
) -> None:
    rows = [{**GOOD, "key": f"l{index}", "prediction": '{"p": 0.5}'} for index in range(3)]
    assert load_rows(bigquery_client, table, rows, job_id=f"load_{uuid.uuid4().hex}")
    found = bigquery_client.query(
        f"SELECT key, JSON_VALUE(prediction, '$.p') AS p "
        f"FROM `{table.project}.{table.dataset_id}.{table.table_id}` ORDER BY key"
    ).result()
    assert [(row["key"], row["p"]) for row in found] == [
        ("l0", "0.5"),
        ("l1", "0.5"),
        ("l2", "0.5"),
    ]


def test_json_text_cascade_wrote_loads_as_the_same_value_as_text_parsed_first(
    bigquery_client: bigquery.Client,  # noqa: F811
    table: bigquery.Table,
) -> None:
    answer = {"p": 0.5, "label": 'ja "quoted"\n', "probs": [0.25, 0.75], "ключ": "🔑"}
    text = json.dumps(answer, ensure_ascii=False, sort_keys=True)
    rows = [
        {**GOOD, "key": "raw", "prediction": JsonText(text)},
        {**GOOD, "key": "parsed", "prediction": text},
    ]
    assert load_rows(bigquery_client, table, rows, job_id=f"load_{uuid.uuid4().hex}")
    found = bigquery_client.query(
        f"SELECT key, prediction FROM `{table.project}.{table.dataset_id}.{table.table_id}` "
        "WHERE key IN ('raw', 'parsed') ORDER BY key"
    ).result()
    assert [(row["key"], row["prediction"]) for row in found] == [
        ("parsed", answer),
        ("raw", answer),
    ]


def test_text_not_marked_as_cascades_json_is_parsed_and_refused_when_invalid(
    bigquery_client: bigquery.Client,  # noqa: F811
    table: bigquery.Table,
) -> None:
    with pytest.raises(ValueError, match="Expecting"):
        load_rows(
            bigquery_client,
            table,
            [{**GOOD, "key": "bad", "prediction": "{not json"}],
            job_id=f"load_{uuid.uuid4().hex}",
        )


def test_a_load_of_a_row_bigquery_would_refuse_loads_nothing(
    bigquery_client: bigquery.Client,  # noqa: F811
    table: bigquery.Table,
) -> None:
    with pytest.raises(WarehouseError, match="no such field: colour"):
        load_rows(bigquery_client, table, [GOOD, {**GOOD, "colour": "red"}], job_id="load_bad")
    counted = bigquery_client.query(
        f"SELECT COUNT(*) AS n FROM `{table.project}.{table.dataset_id}.{table.table_id}`"
    ).result()
    assert next(iter(counted))["n"] == 0


# ---------------------------------------------------------------- the Storage Read API client


def test_the_local_cloud_hands_its_processes_the_bigquery_grpc_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = LocalCloudSettings(bigquery_port=9050, bigquery_grpc_port=9060)
    assert local.runtime_settings().bigquery_storage_emulator_host == "127.0.0.1:9060"
    environment = local.runtime_environment()
    assert environment["BIGQUERY_EMULATOR_HOST"] == "http://127.0.0.1:9050"
    assert environment["BIGQUERY_STORAGE_EMULATOR_HOST"] == "127.0.0.1:9060"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings().bigquery_storage_emulator_host == "127.0.0.1:9060"
    assert "BIGQUERY_STORAGE_EMULATOR_HOST" not in LocalCloudSettings().runtime_environment()


def test_a_local_bigquery_without_its_grpc_host_is_refused_not_read_from_the_cloud() -> None:
    settings = Settings(bigquery_emulator_host="http://127.0.0.1:9050")  # type: ignore[call-arg]
    with pytest.raises(InvalidConfigError, match="BIGQUERY_STORAGE_EMULATOR_HOST"):
        make_bigquery_read_client(settings)


def test_the_read_client_of_a_client_reads_the_same_local_bigquery(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    table: bigquery.Table,
) -> None:
    client = make_bigquery_client(bigquery_local.runtime_settings())
    insert_rows(client, table, [GOOD])
    reader = read_client_for(client)
    try:
        session = reader.create_read_session(
            parent=f"projects/{client.project}",
            read_session=types.ReadSession(
                table=f"projects/{table.project}/datasets/{table.dataset_id}/tables/rows",
                data_format=types.DataFormat.ARROW,
                read_options=types.ReadSession.TableReadOptions(selected_fields=["key"]),
            ),
            max_stream_count=1,
        )
        (stream,) = session.streams
        assert sum(message.row_count for message in reader.read_rows(stream.name)) == 1
    finally:
        reader.transport.close()
        client.close()


def test_a_client_not_made_by_the_factory_gets_no_guessed_read_client() -> None:
    foreign = bigquery.Client(
        project="p",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": "http://127.0.0.1:9"},
    )
    with pytest.raises(ValueError, match="not made by make_bigquery_client"):
        read_client_for(foreign)
    foreign.close()


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'quotes " and \\ backslash',
        "control \x00\x1f\n\t and unicode ключ 🔑 \u2028",
        "",
        0,
        -(2**63),
        2**70,
        1.5,
        -0.0,
        1e300,
        5e-324,
        True,
        False,
        None,
        [1, "a", None, [2.5]],
        {"nested": {"a": [1, 2]}, "ключ": "🔑"},
    ],
)
def test_a_load_line_is_the_text_json_dumps_writes(value: object) -> None:
    from cascade.core.warehouse import _load_line

    kinds = {"v": "STRING", "j": "JSON", "r": "JSON"}
    answer = {"p": value} if value is not None else {"p": 1}
    text = json.dumps(answer, ensure_ascii=False)
    row = {"v": value, "j": text, "r": JsonText(text)}
    expected = json.dumps({"v": value, "j": answer, "r": answer}, ensure_ascii=False)
    assert _load_line(kinds, row, {}) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_load_line_refuses_what_json_cannot_hold(value: float) -> None:
    from cascade.core.warehouse import _load_line

    with pytest.raises(ValueError, match="not JSON compliant"):
        _load_line({"v": "FLOAT64"}, {"v": value}, {})
