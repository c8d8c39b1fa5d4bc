"""A hybrid dataset's head (cascade.batch.head): the config that asks for it, the most
requested keys read from the request log in the local BigQuery (top N, ties, window,
an empty log), the source filtered to them, and the head's rows materialised by SQL for
a Vertex AI batch."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import google.cloud.bigquery as bigquery
import pytest

from cascade.batch.head import (
    Head,
    HeadSource,
    check_column_name,
    head_table_id,
    materialise_head,
    materialise_head_query,
    read_head,
    request_log_table,
    top_keys_query,
)
from cascade.batch.sources import SourceRow
from cascade.batch.tables import table_prefix
from cascade.core.bigquery_grants import bigquery_denial
from cascade.core.errors import InvalidConfigError
from cascade.core.grants import LocalIdentity, identity_for
from cascade.core.pipeline_config import parse_pipeline_config
from cascade.core.serving_config import HeadConfig, ServingConfig
from cascade.core.topology import load_topology
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.serving.request_log import ensure_request_log_table, request_log_row
from tests.bigquery_emulator import REPO_ROOT, bigquery_client, bigquery_local  # noqa: F401

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TABLE = "cascade-local.cascade_features.customers"
# -- the config -------------------------------------------------------------------------


def _serving(head: Any, *, mode: str = "hybrid", source: Any = None) -> str:
    document = {
        "serving": {
            "mode": mode,
            "batch_source": {"table": TABLE} if source is None else source,
            "head": head,
        }
    }
    if source is False:
        del document["serving"]["batch_source"]
    return json.dumps(document)  # YAML is a superset of JSON


def test_a_hybrid_dataset_with_a_batch_source_may_ask_for_a_head() -> None:
    config = parse_pipeline_config(_serving({"keys": 5000}), where="pipeline.yaml").serving
    assert config.head == HeadConfig(keys=5000, window_days=7)
    files = {"files": ["gs://cascade-landing/batch/"]}
    config = parse_pipeline_config(
        _serving({"keys": 1, "window_days": 90}, source=files), where="pipeline.yaml"
    ).serving
    assert config.head == HeadConfig(keys=1, window_days=90)
    assert ServingConfig().head is None  # no head: the whole source, as before


@pytest.mark.parametrize(
    ("head", "field_name"),
    [
        ({}, "keys"),
        ({"keys": 0}, "keys"),
        ({"keys": -1}, "keys"),
        ({"keys": 10_000_001}, "keys"),
        ({"keys": True}, "keys"),
        ({"keys": "100"}, "keys"),
        ({"keys": 10.0}, "keys"),
        ({"keys": None}, "keys"),
        ({"keys": 2**64}, "keys"),
        ({"keys": 10, "window_days": 0}, "window_days"),
        ({"keys": 10, "window_days": 91}, "window_days"),
        ({"keys": 10, "window_days": "7"}, "window_days"),
        ({"keys": 10, "window_days": 1.5}, "window_days"),
        ({"keys": 10, "window": 7}, "window"),
        ({"keys": 10, "table": "p.d.t; DROP TABLE x"}, "table"),
        ([10], "head"),
        ("top 10", "head"),
    ],
)
def test_hostile_head_values_are_refused_naming_the_field(head: Any, field_name: str) -> None:
    with pytest.raises(InvalidConfigError, match=rf"serving\.head.*{field_name}|{field_name}"):
        parse_pipeline_config(_serving(head), where="pipeline.yaml")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (_serving({"keys": 10}, mode="static"), "only a hybrid dataset precomputes a head"),
        (_serving({"keys": 10}, mode="dynamic"), "only a hybrid dataset precomputes a head"),
        (_serving({"keys": 10}, source=False), r"serving\.head: needs serving\.batch_source"),
    ],
)
def test_a_head_needs_a_hybrid_dataset_with_a_batch_source(text: str, reason: str) -> None:
    with pytest.raises(InvalidConfigError, match=reason):
        parse_pipeline_config(text, where="pipeline.yaml")


# -- names in the SQL -----------------------------------------------------------------


@pytest.mark.parametrize(
    "column", ["", "1key", "key; DROP TABLE x", "k`ey", "ke y", "clé", "k" * 301, "a.b"]
)
def test_a_key_column_that_is_not_a_plain_column_name_is_refused(column: str) -> None:
    with pytest.raises(ValueError, match="not a BigQuery column name"):
        check_column_name(column)
    with pytest.raises(ValueError, match="not a BigQuery column name"):
        materialise_head_query(
            source_table=TABLE,
            head_table="cascade-local.cascade_predictions.churn_head",
            log_table="cascade-local.cascade_serving_logs.request_response_logging",
            key_column=column,
        )


@pytest.mark.parametrize(
    "name",
    ["p.d", "cascade-local.d.t`; DROP TABLE x; --", "cascade-local.d-x.t", "a.b.c.d", "`p.d.t`"],
)
def test_hostile_table_names_never_reach_the_sql(name: str) -> None:
    good = {
        "source_table": TABLE,
        "head_table": "cascade-local.cascade_predictions.churn_head",
        "log_table": "cascade-local.cascade_serving_logs.request_response_logging",
    }
    for which in good:
        with pytest.raises(ValueError, match=r"not a (project\.dataset\.table name|valid)"):
            materialise_head_query(**(good | {which: name}), key_column="key")


def test_the_head_table_is_the_batchs_own_in_the_predictions_dataset() -> None:
    batch = "0123456789abcdef0123456789abcdef"
    name = head_table_id("cascade-local", "cascade_predictions", "credit-risk", batch)
    assert name == (
        f"cascade-local.cascade_predictions.{table_prefix('credit-risk')}_head_0123456789abcdef"
    )
    assert name != head_table_id("cascade-local", "cascade_predictions", "credit-risk", "f" * 32)
    assert name != head_table_id("cascade-local", "cascade_predictions", "credit_risk", batch)
    with pytest.raises(ValueError, match="not a batch id"):
        head_table_id("cascade-local", "cascade_predictions", "credit", "../x")


# -- the head, read from the local BigQuery ----------------------------------------------


@pytest.fixture(scope="module")
def log_table(bigquery_local: LocalCloudSettings, bigquery_client: bigquery.Client) -> str:  # noqa: F811
    table = request_log_table(bigquery_local.runtime_settings())
    ensure_request_log_table(bigquery_client, table)
    return table


def write_log(
    client: bigquery.Client,
    table: str,
    endpoint: str,
    requests: Sequence[tuple[Sequence[Any], datetime]],
    *,
    key_field: str = "key",
) -> None:
    """One log row per request (its keys, logged at its time), as the model server's."""
    rows = [
        request_log_row(
            endpoint=endpoint,
            deployed_model_id="1",
            request_id=number,
            keys=keys,
            key_field=key_field,
            logged_at=at,
        )
        for number, (keys, at) in enumerate(requests)
    ]
    assert client.insert_rows_json(table, rows) == []


def _head(client: bigquery.Client, table: str, endpoint: str, keys: int, **options: Any) -> Head:
    return read_head(
        client,
        table,
        config=HeadConfig(keys=keys, window_days=options.pop("window_days", 7)),
        endpoint=endpoint,
        key_field=options.pop("key_field", "key"),
        now=options.pop("now", NOW),
    )


def test_the_head_is_the_most_requested_keys_ties_broken_by_key(
    bigquery_client: bigquery.Client,  # noqa: F811
    log_table: str,
) -> None:
    hour = NOW - timedelta(hours=1)
    write_log(
        bigquery_client,
        log_table,
        "top-n",
        [
            (["a", "b"], hour),
            (["a", "e"], hour),
            (["a"], hour),
            (["c", "e", "b"], hour),
            (["c"], hour),
            (["d"], hour),
        ],
    )
    # a: 3; b, c, e: 2 each; d: 1.
    assert _head(bigquery_client, log_table, "top-n", 1).keys == ("a",)
    assert _head(bigquery_client, log_table, "top-n", 3).keys == ("a", "b", "c")
    assert _head(bigquery_client, log_table, "top-n", 4).keys == ("a", "b", "c", "e")
    everything = _head(bigquery_client, log_table, "top-n", 100)
    assert everything.keys == ("a", "b", "c", "e", "d")
    assert not everything.empty
    assert everything.digest == _head(bigquery_client, log_table, "top-n", 100).digest


def test_only_the_window_and_the_endpoint_count(
    bigquery_client: bigquery.Client,  # noqa: F811
    log_table: str,
) -> None:
    write_log(
        bigquery_client,
        log_table,
        "windowed",
        [
            (["old"] * 5, NOW - timedelta(days=3, minutes=1)),  # before a 3-day window
            (["recent"], NOW - timedelta(days=2)),
            (["later"] * 9, NOW),  # the window ends before now: [start, end)
            (["future"] * 9, NOW + timedelta(minutes=1)),
        ],
    )
    write_log(bigquery_client, log_table, "elsewhere", [(["other"] * 9, NOW - timedelta(hours=1))])
    assert _head(bigquery_client, log_table, "windowed", 10, window_days=3).keys == ("recent",)
    assert _head(bigquery_client, log_table, "windowed", 10, window_days=7).keys == (
        "old",
        "recent",
    )


def test_instances_without_the_key_field_are_not_in_the_head(
    bigquery_client: bigquery.Client,  # noqa: F811
    log_table: str,
) -> None:
    hour = NOW - timedelta(hours=1)
    write_log(bigquery_client, log_table, "fields", [(["x", "x"], hour)], key_field="customer_id")
    write_log(bigquery_client, log_table, "fields", [([None, "", "y"], hour)])
    assert _head(bigquery_client, log_table, "fields", 10, key_field="customer_id").keys == ("x",)
    assert _head(bigquery_client, log_table, "fields", 10).keys == ("y",)


def test_an_empty_or_missing_log_is_an_empty_head_which_scores_the_whole_source(
    bigquery_client: bigquery.Client,  # noqa: F811
    log_table: str,
) -> None:
    quiet = _head(bigquery_client, log_table, "no-traffic-yet", 10)
    assert quiet.empty
    assert "no request with a 'key' key in the window" in quiet.why_empty
    assert "the whole source is scored" in quiet.describe()
    project, dataset, _ = log_table.split(".")
    missing = f"{project}.{dataset}.not_there"
    absent = _head(bigquery_client, missing, "no-traffic-yet", 10)
    assert absent.empty
    assert f"no request log: {missing} does not exist" in absent.why_empty
    with pytest.raises(ValueError, match="an empty head filters nothing"):
        HeadSource(FakeSource([]), absent, "key")


def _guarded_identity(name: str) -> Any:
    topology = load_topology(REPO_ROOT / "infra" / "topology.yaml")
    settings = LocalCloudSettings(repo_root=REPO_ROOT).runtime_settings()
    return identity_for(topology, name, settings)


def _query_body(query: str) -> bytes:
    return json.dumps({"configuration": {"query": {"query": query}}}).encode()


def test_the_topology_grants_what_reading_and_materialising_a_head_needs() -> None:
    jobs = _guarded_identity("vertex-jobs")  # the local task reads the head
    assert {"cascade_features", "cascade_serving_logs"} <= jobs.tables_read
    assert jobs.bigquery_jobs
    function = _guarded_identity("batch-predict")  # materialises it for Vertex AI
    assert function.tables_read == {"cascade_features", "cascade_serving_logs"}
    assert function.tables_write == {"cascade_predictions"}
    assert function.bigquery_jobs


def test_the_jobs_account_may_read_the_head_from_the_request_log() -> None:
    jobs = _guarded_identity("vertex-jobs")
    assert "cascade_serving_logs" in jobs.tables_read
    query = top_keys_query("cascade-local.cascade_serving_logs.request_response_logging", "key")
    url = "http://h/bigquery/v2/projects/cascade-local/jobs"
    assert bigquery_denial(jobs, "POST", url, _query_body(query)) is None


# -- the source, filtered to the head --------------------------------------------------


@dataclass
class FakeSource:
    values: list[dict[str, Any]]
    problems: dict[int, str] = field(default_factory=dict)
    identity: str = "bq://p.d.t@2026-11-30#6"
    uri: str = "bq://p.d.t"

    def rows(self) -> Iterator[SourceRow]:
        for number, values in enumerate(self.values):
            problem = self.problems.get(number)
            yield SourceRow(number, self.uri, {} if problem else values, problem=problem)


def _fixed_head(*keys: str) -> Head:
    return Head(
        keys=keys,
        config=HeadConfig(keys=10),
        endpoint="churn",
        key_field="key",
        log_table="p.d.t",
        start=NOW - timedelta(days=7),
        end=NOW,
    )


def test_the_filter_keeps_the_heads_rows_and_counts_the_rest() -> None:
    source = FakeSource(
        [
            {"key": "a", "age": 1},
            {"key": "b"},
            {"key": 7},  # an INT64 key column: compared as text, as CAST(key AS STRING)
            {"key": None},
            {"age": 3},
            {"key": "unreadable"},
            {"key": "c"},
            {"key": True},
        ],
        problems={5: "not valid JSON"},
    )
    filtered = HeadSource(source, _fixed_head("a", "c", "7", "True"), "key")
    rows = list(filtered.rows())
    assert [row.number for row in rows] == [0, 2, 5, 6]  # the source's own row numbers
    assert rows[2].problem == "not valid JSON"  # still an error, recorded as one
    assert (filtered.inside, filtered.outside) == (4, 4)
    assert filtered.uri == source.uri
    list(filtered.rows())  # a second read counts afresh
    assert (filtered.inside, filtered.outside) == (4, 4)


def test_a_different_head_is_a_different_identity() -> None:
    source = FakeSource([])
    one = HeadSource(source, _fixed_head("a", "b"), "key").identity
    assert one.startswith(source.identity + "|head:2:")
    assert HeadSource(source, _fixed_head("b", "a"), "key").identity == one  # same keys
    assert HeadSource(source, _fixed_head("a", "c"), "key").identity != one
    assert HeadSource(source, _fixed_head("a"), "key").identity != one


# -- materialised for Vertex AI ---------------------------------------------------------


@pytest.fixture(scope="module")
def features(bigquery_client: bigquery.Client) -> str:  # noqa: F811
    """A source table with a STRING key and an INT64 key column."""
    project = bigquery_client.project
    bigquery_client.create_dataset(f"{project}.cascade_features", exists_ok=True)
    bigquery_client.create_dataset(f"{project}.cascade_predictions", exists_ok=True)
    table = f"{project}.cascade_features.head_source"
    schema = [
        bigquery.SchemaField("customer_id", "STRING"),
        bigquery.SchemaField("number", "INT64"),
        bigquery.SchemaField("age", "FLOAT64"),
    ]
    bigquery_client.create_table(bigquery.Table(table, schema=schema), exists_ok=True)
    rows = [
        {"customer_id": key, "number": number, "age": float(number)}
        for number, key in enumerate(["a", "b", "c", "d"], start=1)
    ]
    assert bigquery_client.insert_rows_json(table, rows) == []
    return table


def _materialise(
    client: bigquery.Client, log_table: str, source: str, endpoint: str, column: str, keys: int
) -> Any:
    head = head_table_id(client.project, "cascade_predictions", endpoint, "ab" * 16)
    outcome = materialise_head(
        client,
        source_table=source,
        head_table=head,
        log_table=log_table,
        key_column=column,
        config=HeadConfig(keys=keys),
        endpoint=endpoint,
        now=NOW,
    )
    return head, outcome


def test_the_heads_rows_are_materialised_by_one_query(
    bigquery_client: bigquery.Client,  # noqa: F811
    log_table: str,
    features: str,
) -> None:
    hour = NOW - timedelta(hours=1)
    write_log(
        bigquery_client,
        log_table,
        "materialised",
        [(["c", "c", "a", "zz"], hour), (["zz"], hour), (["b"], hour)],
        key_field="customer_id",
    )
    head, outcome = _materialise(
        bigquery_client, log_table, features, "materialised", "customer_id", 3
    )
    assert (outcome.score, outcome.table, outcome.rows) == ("head", head, 2)
    found = bigquery_client.query(f"SELECT * FROM `{head}` ORDER BY customer_id").result()
    assert [dict(row) for row in found] == [  # every column of the source, the head's rows
        {"customer_id": "a", "number": 1, "age": 1.0},
        {"customer_id": "c", "number": 3, "age": 3.0},
    ]
    # An INT64 key column joins as text, as the log holds it.
    write_log(bigquery_client, log_table, "numbers", [(["4", "2"], hour)], key_field="number")
    head, outcome = _materialise(bigquery_client, log_table, features, "numbers", "number", 1)
    assert outcome.score == "head"
    assert [row["number"] for row in bigquery_client.query(f"SELECT * FROM `{head}`")] == [2]


def test_without_traffic_the_whole_source_is_scored_and_a_head_of_strangers_nothing(
    bigquery_client: bigquery.Client,  # noqa: F811
    log_table: str,
    features: str,
) -> None:
    _, outcome = _materialise(bigquery_client, log_table, features, "silent", "customer_id", 3)
    assert (outcome.score, outcome.table) == ("source", features)
    assert "no request with a 'customer_id' key" in outcome.reason
    project, dataset, _ = log_table.split(".")
    _, outcome = _materialise(
        bigquery_client, f"{project}.{dataset}.absent", features, "silent", "customer_id", 3
    )
    assert (outcome.score, outcome.table) == ("source", features)
    assert "does not exist" in outcome.reason
    write_log(
        bigquery_client,
        log_table,
        "strangers",
        [(["x", "y"], NOW - timedelta(hours=1))],
        key_field="customer_id",
    )
    _, outcome = _materialise(bigquery_client, log_table, features, "strangers", "customer_id", 3)
    assert (outcome.score, outcome.table) == ("nothing", None)


def test_the_batch_predict_function_may_materialise_the_head() -> None:
    function = _guarded_identity("batch-predict")
    query = materialise_head_query(
        source_table=TABLE,
        head_table="cascade-local.cascade_predictions.churn_head",
        log_table="cascade-local.cascade_serving_logs.request_response_logging",
        key_column="customer_id",
    )
    url = "http://h/bigquery/v2/projects/cascade-local/jobs"
    assert bigquery_denial(function, "POST", url, _query_body(query)) is None


def test_materialising_the_head_needs_write_on_the_predictions_dataset() -> None:
    reader = LocalIdentity(
        principal="reader@cascade-local.iam.gserviceaccount.com",
        name="reader",
        tables_read=frozenset({"cascade_features", "cascade_serving_logs", "cascade_predictions"}),
        bigquery_jobs=True,
    )
    query = materialise_head_query(
        source_table=TABLE,
        head_table="cascade-local.cascade_predictions.churn_head",
        log_table="cascade-local.cascade_serving_logs.request_response_logging",
        key_column="customer_id",
    )
    url = "http://h/bigquery/v2/projects/cascade-local/jobs"
    denied = bigquery_denial(reader, "POST", url, _query_body(query))
    assert denied is not None
    assert denied[0] == "bigquery.tables.updateData"
    assert "churn_head" in denied[2]
