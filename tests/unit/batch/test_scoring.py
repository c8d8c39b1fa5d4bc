"""Batch scoring into the local BigQuery with the real client: one prediction row per
input key, refused rows in the errors table with the row and the reason (the good rows
still land), idempotent re-runs, hostile inputs."""

from __future__ import annotations

import io
import json
import math
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import google.cloud.bigquery as bigquery
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cascade.batch.scoring import (
    MAX_KEY_BYTES,
    BatchManifest,
    batch_id_for,
    manifest_name,
    output_tables,
    score_source,
)
from cascade.batch.sources import BigQueryTableSource, FileSource
from cascade.batch.tables import table_prefix
from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.warehouse import insert_rows, table_id
from cascade.serving.precomputed import MemoryPrecomputedStore
from cascade.serving.servable import Servable, load_servable
from tests.bigquery_emulator import bigquery_client, bigquery_local  # noqa: F401
from tests.unit.batch.models import KeylessModel, RefusingModel, export
from tests.unit.serving.saved_models import expected_positive, export_tiny_model

INPUT_SCHEMA = [
    bigquery.SchemaField("key", "STRING"),
    bigquery.SchemaField("age", "FLOAT64"),
    bigquery.SchemaField("city", "STRING"),
    bigquery.SchemaField("extra", "INT64"),
]


def _load(directory: Path, version: str) -> Servable:
    return load_servable(directory, version=version, run_id="run-1", model_uri=str(directory))


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory) -> Servable:
    return _load(export_tiny_model(tmp_path_factory.mktemp("m") / "model"), "3")


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Servable:
    return _load(export(RefusingModel(), tmp_path_factory.mktemp("r") / "model"), "1")


@pytest.fixture
def project(bigquery_client: bigquery.Client) -> str:  # noqa: F811
    return bigquery_client.project


@pytest.fixture
def bq_dataset(bigquery_client: bigquery.Client) -> str:  # noqa: F811
    """The predictions dataset, made as Terraform (or `cascade up`) makes it."""
    name = f"preds_{uuid.uuid4().hex[:8]}"
    bigquery_client.create_dataset(name)
    return name


@pytest.fixture
def artifacts() -> MemoryArtifactStore:
    return MemoryArtifactStore("cascade-artifacts")


def _input_table(
    client: bigquery.Client, rows: list[dict[str, Any]], schema: list[Any] | None = None
) -> str:
    dataset = client.create_dataset(f"in_{uuid.uuid4().hex[:8]}", exists_ok=True)
    name = table_id(client.project, dataset.dataset_id, "instances")
    table = client.create_table(bigquery.Table(name, schema=schema or INPUT_SCHEMA))
    if rows:
        insert_rows(client, table, rows)
    return name


def _select(client: bigquery.Client, table: str, order: str = "key") -> list[dict[str, Any]]:
    found = client.query(f"SELECT * FROM `{table}` ORDER BY {order}").result()
    return [dict(row.items()) for row in found]


def _prediction(row: dict[str, Any]) -> dict[str, Any]:
    value = row["prediction"]
    return value if isinstance(value, dict) else json.loads(value)


def _score(
    client: bigquery.Client,
    source: Any,
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
    **options: Any,
) -> Any:
    return score_source(
        source=source,
        servable=servable,
        dataset="credit-risk",
        client=client,
        artifacts=artifacts,
        project=client.project,
        bq_dataset=bq_dataset,
        **options,
    )


def test_every_key_of_a_10k_row_table_gets_one_prediction_with_the_model_version(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    rows = [
        {
            "key": f"k{index:05d}",
            "age": float(index % 90),
            "city": ["paris", "lyon", "x"][index % 3],
            "extra": index,
        }
        for index in range(10_000)
    ]
    source = BigQueryTableSource(
        bigquery_client, _input_table(bigquery_client, rows), page_size=700
    )
    result = _score(bigquery_client, source, servable, artifacts, bq_dataset)

    predictions, errors = output_tables(
        bigquery_client.project, "credit-risk", "3", bq_dataset=bq_dataset
    )
    assert predictions.endswith(f".{table_prefix('credit-risk')}_v3")
    written = _select(bigquery_client, predictions)
    assert [row["key"] for row in written] == [row["key"] for row in rows]
    assert {row["model_version"] for row in written} == {"3"}
    assert {row["batch_id"] for row in written} == {result.manifest.batch_id}
    assert all(row["predicted_at"] is not None for row in written)
    for row, source_row in zip(written[::997], rows[::997], strict=True):
        positive = _prediction(row)["probabilities"][1]
        assert math.isclose(
            positive, expected_positive(source_row["age"], source_row["city"]), rel_tol=1e-5
        )
        assert "key" not in _prediction(row)
    assert _select(bigquery_client, errors) == []
    manifest = result.manifest
    assert (manifest.rows_read, manifest.rows_scored, manifest.rows_failed) == (10_000, 10_000, 0)
    assert not result.skipped


def test_refused_rows_land_in_the_errors_table_and_the_good_rows_still_land(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    huge = "k" * (MAX_KEY_BYTES + 1)
    lines = [
        {"key": "good", "age": 30, "city": "paris"},
        {"key": None, "age": 30, "city": "paris"},  # row 1: null key
        {"key": "", "age": 30, "city": "paris"},  # row 2: empty key
        {"key": "good", "age": 40, "city": "lyon"},  # row 3: duplicate
        {"key": huge, "age": 1, "city": "nice"},  # row 4: key too long
        {"key": "ключ-🔑", "age": None, "city": None},  # row 5: unicode; nulls are missing
        {"key": "old", "age": "old", "city": "paris"},  # row 6: wrong type
        {"key": "flag", "age": True, "city": "paris"},  # row 7: a bool is not a number
        {"key": "nocity", "age": 1},  # row 8: column missing
        {"key": 7, "age": 1, "city": "paris"},  # row 9: key not a string
        {"key": "big", "age": 1e39, "city": "paris"},  # row 10: over float32 (the rules)
        {"key": "long-city", "age": 2, "city": "é" * 100_000},  # row 11: huge string, fine
        {"key": "extra", "age": 2, "city": "nice", "colour": "red"},  # extra columns ignored
    ]
    data = "\n".join(json.dumps(line) for line in lines) + "\n[1, 2]\n{not json\n"
    artifacts.write("batches/in.jsonl", data.encode())
    result = _score(
        bigquery_client,
        FileSource(artifacts, ["batches/in.jsonl"]),
        servable,
        artifacts,
        bq_dataset,
        chunk_rows=4,
    )
    predictions, errors = output_tables(
        bigquery_client.project, "credit-risk", "3", bq_dataset=bq_dataset
    )
    scored = {row["key"]: _prediction(row) for row in _select(bigquery_client, predictions)}
    assert sorted(scored) == sorted(["good", "ключ-🔑", "long-city", "extra"])
    assert math.isclose(
        scored["ключ-🔑"]["probabilities"][1], expected_positive(math.nan, ""), rel_tol=1e-5
    )
    refused = {
        row["row_number"]: (row["key"], row["field"], row["reason"])
        for row in _select(bigquery_client, errors, order="row_number")
    }
    assert sorted(refused) == [1, 2, 3, 4, 6, 7, 8, 9, 10, 13, 14]
    assert refused[1] == (None, "key", "the key is null")
    assert refused[2] == (None, "key", "the key is empty")
    assert refused[3] == ("good", "key", "duplicate key: first seen at row 0")
    assert refused[4][0] == huge[:1024]
    assert "over the 1024-byte limit" in refused[4][2]
    assert refused[6][:2] == ("old", "age")
    assert "not str" in refused[6][2]
    assert refused[7][:2] == ("flag", "age")
    assert "not bool" in refused[7][2]
    assert refused[8][:2] == ("nocity", "city")
    assert "no 'city' column" in refused[8][2]
    assert refused[9] == (None, "key", "the key must be a string, not int")
    assert refused[10][:2] == ("big", "age")
    assert refused[13] == (None, "", "a JSONL line must be a JSON object")
    assert refused[14][2].startswith("not valid JSON")
    assert (
        result.manifest.rows_read,
        result.manifest.rows_scored,
        result.manifest.rows_failed,
    ) == (15, 4, 11)
    sources = {row["source"] for row in _select(bigquery_client, errors, order="row_number")}
    assert sources == {"gs://cascade-artifacts/batches/in.jsonl"}


def test_a_chunk_the_model_refuses_is_bisected_down_to_the_bad_rows(
    bigquery_client: bigquery.Client,  # noqa: F811
    refusing: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    bad = {5, 17, 18, 63}
    lines = [
        {"key": f"k{index:03d}", "code": "x" if index in bad else str(index)} for index in range(64)
    ]
    artifacts.write("b/in.jsonl", "\n".join(json.dumps(line) for line in lines).encode())
    calls: list[int] = []
    original = refusing.predict_columns

    def counting(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
        calls.append(len(columns["key"]))
        return original(columns)

    with mock.patch.object(refusing, "predict_columns", side_effect=counting):
        result = _score(
            bigquery_client,
            FileSource(artifacts, ["b/in.jsonl"]),
            refusing,
            artifacts,
            bq_dataset,
            chunk_rows=64,
        )
    predictions, errors = output_tables(
        bigquery_client.project, "credit-risk", "1", bq_dataset=bq_dataset
    )
    scored = {
        row["key"]: _prediction(row)["value"] for row in _select(bigquery_client, predictions)
    }
    assert sorted(scored) == [f"k{index:03d}" for index in range(64) if index not in bad]
    assert scored["k042"] == 42.0
    refused = _select(bigquery_client, errors, order="row_number")
    assert [row["row_number"] for row in refused] == sorted(bad)
    assert all(row["reason"].startswith("the model refused the row") for row in refused)
    assert result.manifest.rows_failed == len(bad)
    assert len(calls) < 64  # bisected, not row by row


def test_a_model_whose_output_is_not_finite_fails_every_row_and_writes_no_prediction(
    bigquery_client: bigquery.Client,  # noqa: F811
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
    tmp_path: Path,
) -> None:
    broken = _load(export_tiny_model(tmp_path / "broken", broken=True), "4")
    artifacts.write("b/in.jsonl", b'{"key": "a", "age": 1, "city": "paris"}\n')
    result = _score(
        bigquery_client, FileSource(artifacts, ["b/in.jsonl"]), broken, artifacts, bq_dataset
    )
    predictions, errors = output_tables(
        bigquery_client.project, "credit-risk", "4", bq_dataset=bq_dataset
    )
    assert _select(bigquery_client, predictions) == []
    (row,) = _select(bigquery_client, errors)
    assert row["key"] == "a"
    assert "not finite" in row["reason"]
    assert result.manifest.rows_failed == 1


def test_a_finished_batch_is_skipped_and_a_retried_one_loads_nothing_twice(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    rows = [{"key": f"k{index}", "age": 1.0, "city": "nice", "extra": 1} for index in range(5)]
    name = _input_table(bigquery_client, rows)
    first = _score(
        bigquery_client, BigQueryTableSource(bigquery_client, name), servable, artifacts, bq_dataset
    )
    again = _score(
        bigquery_client, BigQueryTableSource(bigquery_client, name), servable, artifacts, bq_dataset
    )
    assert again.skipped
    assert again.manifest == first.manifest
    predictions, _ = output_tables(
        bigquery_client.project, "credit-risk", "3", bq_dataset=bq_dataset
    )
    assert len(_select(bigquery_client, predictions)) == 5
    stored = artifacts.read_model(
        manifest_name("credit-risk", first.manifest.batch_id), BatchManifest
    )
    assert stored is not None
    assert stored[0] == first.manifest

    # A crash before the manifest: the re-run finds its load jobs (named after the batch
    # and the part) done, and loads no row twice.
    artifacts.delete(manifest_name("credit-risk", first.manifest.batch_id))
    with mock.patch.object(
        bigquery_client, "load_table_from_file", wraps=bigquery_client.load_table_from_file
    ) as loads:
        retried = _score(
            bigquery_client,
            BigQueryTableSource(bigquery_client, name),
            servable,
            artifacts,
            bq_dataset,
        )
    assert loads.call_args_list == []
    assert len(_select(bigquery_client, predictions)) == 5
    assert retried.manifest.batch_id == first.manifest.batch_id
    assert not retried.skipped


def test_the_batch_id_is_derived_from_dataset_version_and_source_generation(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    artifacts.write("b/in.csv", b"key,age,city\na,1,paris\n")
    first = _score(
        bigquery_client, FileSource(artifacts, ["b/in.csv"]), servable, artifacts, bq_dataset
    )
    artifacts.write("b/in.csv", b"key,age,city\na,2,paris\n")  # a new generation
    second = _score(
        bigquery_client, FileSource(artifacts, ["b/in.csv"]), servable, artifacts, bq_dataset
    )
    assert not second.skipped
    assert second.manifest.batch_id != first.manifest.batch_id
    assert batch_id_for("credit-risk", "3", "x") != batch_id_for("credit-risk", "4", "x")
    assert batch_id_for("credit-risk", "3", "x") != batch_id_for("other", "3", "x")


def test_csv_and_parquet_files_are_read_by_the_models_input_types(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    artifacts.write(
        "b/part-0.csv",
        b'key,age,city,note\nc1,25,paris,x\nc2,,lyon,"a,b"\nc3,abc,nice,y\nc4,1\n',
    )
    table = pa.table({"key": ["p1", "p2"], "age": [10.0, None], "city": ["nice", None]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    artifacts.write("b/part-1.parquet", buffer.getvalue())
    artifacts.write("b/readme.txt", b"not data")
    result = _score(
        bigquery_client, FileSource.under(artifacts, "b/"), servable, artifacts, bq_dataset
    )
    predictions, errors = output_tables(
        bigquery_client.project, "credit-risk", "3", bq_dataset=bq_dataset
    )
    scored = {
        row["key"]: _prediction(row)["probabilities"][1]
        for row in _select(bigquery_client, predictions)
    }
    assert sorted(scored) == ["c1", "c2", "p1", "p2"]
    assert math.isclose(scored["c2"], expected_positive(math.nan, "lyon"), rel_tol=1e-5)
    assert math.isclose(scored["p2"], expected_positive(math.nan, ""), rel_tol=1e-5)
    refused = {
        row["row_number"]: row for row in _select(bigquery_client, errors, order="row_number")
    }
    assert refused[2]["field"] == "age"
    assert "not a number" in refused[2]["reason"]
    assert refused[3]["reason"] == "2 values for 4 header columns"
    assert result.manifest.rows_read == 6


def test_an_empty_table_makes_empty_output_tables_and_a_manifest(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    name = _input_table(bigquery_client, [])
    result = _score(
        bigquery_client, BigQueryTableSource(bigquery_client, name), servable, artifacts, bq_dataset
    )
    predictions, errors = output_tables(
        bigquery_client.project, "credit-risk", "3", bq_dataset=bq_dataset
    )
    assert _select(bigquery_client, predictions) == []
    assert _select(bigquery_client, errors) == []
    assert (result.manifest.rows_read, result.manifest.rows_scored) == (0, 0)


def test_a_table_without_the_key_column_fails_every_row_naming_the_key(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    schema = [bigquery.SchemaField("age", "FLOAT64"), bigquery.SchemaField("city", "STRING")]
    name = _input_table(bigquery_client, [{"age": 1.0, "city": "x"}] * 3, schema)
    result = _score(
        bigquery_client, BigQueryTableSource(bigquery_client, name), servable, artifacts, bq_dataset
    )
    _, errors = output_tables(bigquery_client.project, "credit-risk", "3", bq_dataset=bq_dataset)
    assert {
        (row["field"], row["reason"]) for row in _select(bigquery_client, errors, "row_number")
    } == {("key", "no 'key' column: the key is missing")}
    assert result.manifest.rows_failed == 3


def test_answers_also_go_to_the_precomputed_store_for_that_version(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
) -> None:
    artifacts.write("b/in.jsonl", b'{"key": "a", "age": 1, "city": "paris"}\n{"key": null}\n')
    store = MemoryPrecomputedStore()
    result = _score(
        bigquery_client,
        FileSource(artifacts, ["b/in.jsonl"]),
        servable,
        artifacts,
        bq_dataset,
        sink=store,
    )
    assert result.manifest.rows_stored == 1
    found = store.read("credit-risk", "3", ["a"])
    assert math.isclose(found["a"]["probabilities"][1], expected_positive(1, "paris"), rel_tol=1e-5)
    assert store.read("credit-risk", "2", ["a"]) == {}


def test_a_model_without_a_passthrough_key_is_refused(
    bigquery_client: bigquery.Client,  # noqa: F811
    artifacts: MemoryArtifactStore,
    bq_dataset: str,
    tmp_path: Path,
) -> None:
    keyless = _load(export(KeylessModel(), tmp_path / "keyless"), "1")
    artifacts.write("b/in.jsonl", b'{"age": 1}\n')
    with pytest.raises(BadInputError, match="passthrough key"):
        _score(
            bigquery_client, FileSource(artifacts, ["b/in.jsonl"]), keyless, artifacts, bq_dataset
        )


def test_missing_objects_and_unknown_formats_are_refused_before_anything_runs() -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    with pytest.raises(BadInputError, match="no such object"):
        FileSource(artifacts, ["b/missing.csv"])
    artifacts.write("b/in.xlsx", b"x")
    with pytest.raises(BadInputError, match="not a file batch prediction reads"):
        FileSource(artifacts, ["b/in.xlsx"])
    with pytest.raises(ValueError, match="not a valid BigQuery"):
        output_tables("cascade-local", "credit-risk", "3", bq_dataset="x;DROP")
    with pytest.raises(ValueError, match="digits only"):
        output_tables("cascade-local", "credit-risk", "3` OR 1")


def test_a_missing_predictions_dataset_is_a_clear_error_not_a_retry_loop(
    bigquery_client: bigquery.Client,  # noqa: F811
    servable: Servable,
    artifacts: MemoryArtifactStore,
) -> None:
    artifacts.write("b/in.csv", b"key,age,city\na,1,paris\n")
    with pytest.raises(InvalidConfigError, match=r"preds_missing does not exist"):
        _score(
            bigquery_client,
            FileSource(artifacts, ["b/in.csv"]),
            servable,
            artifacts,
            "preds_missing",
        )
