"""A dataset's BigQuery source: its config (hostile values refused, errors naming the
field), the extraction's SQL (names checked and quoted, values as parameters), the
watermark's JSON form, and the BigQuery guard's reading of EXPORT DATA."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from cascade.core.bigquery_export import watermark_parameters
from cascade.core.bigquery_grants import bigquery_denial
from cascade.core.bigquery_source import (
    BigQuerySource,
    decode_watermark,
    encode_watermark,
    export_statement,
    max_watermark_statement,
)
from cascade.core.errors import InvalidConfigError
from cascade.core.export_data import parse_export_data
from cascade.core.grants import LocalIdentity
from cascade.core.pipeline_config import parse_pipeline_config

WATERMARK = "  watermark: {column: updated_at, type: TIMESTAMP}\n"


def config(body: str) -> BigQuerySource:
    parsed = parse_pipeline_config(f"bigquery_source:\n{body}", where="pipeline.yaml")
    assert parsed.bigquery_source is not None
    return parsed.bigquery_source


def refused(body: str) -> str:
    with pytest.raises(InvalidConfigError) as caught:
        parse_pipeline_config(f"bigquery_source:\n{body}", where="gs://a/pipeline.yaml")
    message = str(caught.value)
    assert message.startswith("gs://a/pipeline.yaml: bigquery_source")
    return message


# ---------------------------------------------------------------- config


def test_a_table_source_names_a_project_table_or_a_warehouse_table() -> None:
    full = config("  table: my-project.sales.orders\n" + WATERMARK)
    logical = config("  table: sources.orders\n" + WATERMARK)

    assert full.relation("p-x", lambda name: "never") == "`my-project.sales.orders`"
    assert logical.relation("cascade-local", lambda name: f"cascade_{name}") == (
        "`cascade-local.cascade_sources.orders`"
    )
    assert full.watermark.column == "updated_at"
    assert full.watermark.type == "TIMESTAMP"


def test_a_query_source_is_wrapped_as_a_subquery() -> None:
    source = config("  query: SELECT a, updated_at FROM `p-roj1.sources.t` -- mine\n" + WATERMARK)

    relation = source.relation("p", lambda name: name)

    assert relation == "(\nSELECT a, updated_at FROM `p-roj1.sources.t` -- mine\n)"


@pytest.mark.parametrize(
    "table",
    [
        "'p-roj1.d.t; DROP TABLE x'",
        "'`p-roj1.d.t`'",
        "'p-roj1.d.t`'",
        "'p-roj1.d.t--'",
        "'p-roj1.d.t/*'",
        "'d'",
        "'p-roj1.d.t.x'",
        "'p-roj1.d.t OR 1=1'",
        "'p-roj1.d-x.t'",
        "'sources.t-1'",
        "'Sources.t'",
        "'p-roj1..t'",
        "'p-roj1.d.t\\n'",
        "'sources.t\\u0000'",
    ],
)
def test_a_table_that_is_not_a_plain_name_is_refused(table: str) -> None:
    message = refused(f"  table: {table}\n" + WATERMARK)

    assert "bigquery_source.table" in message
    assert "not a table" in message


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT 1 FROM `p-roj1.s.t`; DROP TABLE `p-roj1.s.t`", "single"),
        ("SELECT 1 FROM `p-roj1.s.t`;", "single"),
        ("DELETE FROM `p-roj1.s.t` WHERE TRUE", "single SELECT"),
        ("INSERT INTO `p-roj1.s.t` SELECT * FROM `p-roj1.s.u`", "single SELECT"),
        ("CREATE TABLE `p-roj1.s.x` AS SELECT * FROM `p-roj1.s.t`", "single SELECT"),
        ("SELECT * FROM `p-roj1.s.t` /* unterminated", "not one plain SELECT"),
        ("SELECT * FROM `p-roj1.s.t` WHERE a = 'open", "not one plain SELECT"),
        ("EXECUTE IMMEDIATE 'DROP TABLE x'", "not one plain SELECT"),
        ("EXPORT DATA OPTIONS(uri='gs://b/x/*') AS SELECT 1", "not one plain SELECT"),
        ("SELECT * FROM (`p-roj1.s.t` JOIN `p-roj1.s.u` USING (k))", "not one plain SELECT"),
        ("SELECT * FROM t", "not one plain SELECT"),
        ("SELECT r'\\'' FROM `p-roj1.s.t`", "not one plain SELECT"),
        ("BEGIN SELECT 1; END", "not one plain SELECT"),
    ],
)
def test_a_query_that_is_not_one_read_only_select_is_refused(query: str, reason: str) -> None:
    message = refused(f"  query: {query!r}\n" + WATERMARK.replace("'", ""))

    assert "bigquery_source.query" in message
    assert reason in message


def test_semicolons_and_comment_markers_inside_literals_and_comments_are_text() -> None:
    query = "SELECT ';' AS a, '--' AS b, updated_at FROM `p-roj1.s.t` # trailing; comment"

    source = config(f"  query: {query!r}\n" + WATERMARK)

    assert source.query == query


def test_a_query_longer_than_the_limit_is_refused() -> None:
    query = "SELECT a FROM `p-roj1.s.t` WHERE a IN (" + ",".join(["1"] * 60_000) + ")"

    assert "longer than" in refused(f"  query: {query!r}\n" + WATERMARK)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  table: sources.t\n  query: SELECT 1\n" + WATERMARK, "either a table or a query"),
        (WATERMARK, "either a table or a query"),
        ("  table: sources.t\n", "watermark"),
        ("  table: sources.t\n  watermark: {column: a, type: STRING}\n", "watermark.type"),
        ("  table: sources.t\n  watermark: {column: 'a`b', type: INT64}\n", "watermark.column"),
        ("  table: sources.t\n  watermark: {column: 'a; --', type: INT64}\n", "watermark.column"),
        ("  table: sources.t\n  watermark: {column: '1a', type: INT64}\n", "watermark.column"),
        ("  table: sources.t\n  watermark: {column: a, type: INT64, x: 1}\n", "watermark.x"),
        ("  table: sources.t\n  tabel: x\n" + WATERMARK, "bigquery_source.tabel"),
    ],
)
def test_config_errors_name_the_field(body: str, expected: str) -> None:
    assert expected in refused(body)


# ---------------------------------------------------------------- SQL


def test_the_high_watermark_query_quotes_the_column() -> None:
    assert max_watermark_statement("`p-roj1.s.t`", "updated_at") == (
        "SELECT MAX(`updated_at`) AS high FROM `p-roj1.s.t` AS source"
    )


def test_the_export_writes_parquet_shards_of_the_range_with_parameters() -> None:
    first = export_statement("`p-roj1.s.t`", "seq", "gs://bkt/x/0/", incremental=False)
    later = export_statement("`p-roj1.s.t`", "seq", "gs://bkt/x/1/", incremental=True)

    assert first == (
        "EXPORT DATA OPTIONS(uri='gs://bkt/x/0/part-*.parquet', format='PARQUET', "
        "overwrite=true) AS SELECT * FROM `p-roj1.s.t` AS source WHERE `seq` <= @high"
    )
    assert later.endswith("WHERE `seq` > @low AND `seq` <= @high")


@pytest.mark.parametrize(
    "prefix",
    ["gs://bkt/x/0", "gs://bkt/x'/", "gs://bkt/x/../", "gs://bkt//x/", "gs://B/x/", "s3://bkt/x/"],
)
def test_an_export_prefix_that_is_not_plain_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="export destination"):
        export_statement("`p-roj1.s.t`", "seq", prefix, incremental=False)


def test_a_column_that_is_not_plain_is_refused_in_sql_too() -> None:
    with pytest.raises(ValueError, match="column"):
        max_watermark_statement("`p-roj1.s.t`", "a`) FROM x --")


def test_watermark_values_travel_as_typed_parameters() -> None:
    low, high = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)

    both = watermark_parameters("TIMESTAMP", low, high)
    first = watermark_parameters("INT64", None, 7)

    assert [(p.name, p.type_, p.value) for p in both] == [
        ("low", "TIMESTAMP", low),
        ("high", "TIMESTAMP", high),
    ]
    assert [(p.name, p.type_, p.value) for p in first] == [("high", "INT64", 7)]


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [
        ("INT64", 42, 42),
        ("DATE", date(2026, 3, 1), "2026-03-01"),
        ("DATETIME", datetime(2026, 3, 1, 4, 5, 6, 7), "2026-03-01T04:05:06.000007"),
        ("TIMESTAMP", datetime(2026, 3, 1, 4, 5, tzinfo=UTC), "2026-03-01T04:05:00+00:00"),
    ],
)
def test_a_watermark_round_trips_through_json(kind: str, value: object, stored: object) -> None:
    assert encode_watermark(kind, value) == stored  # type: ignore[arg-type]
    assert decode_watermark(kind, stored) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("INT64", "42"),
        ("INT64", True),
        ("DATE", 3),
        ("TIMESTAMP", "2026-03-01T04:05:00"),
        ("DATETIME", "2026-03-01T04:05:00+00:00"),
        ("DATE", "2026-13-01"),
    ],
)
def test_a_stored_watermark_of_another_type_is_refused(kind: str, value: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each type's own message
        decode_watermark(kind, value)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the guard


URL = "https://bigquery.googleapis.com/bigquery/v2/projects/p-roj1/jobs"


def exporter(**grants: object) -> LocalIdentity:
    return LocalIdentity(
        principal="x@p-roj1.iam.gserviceaccount.com",
        name="extract",
        tables_read=frozenset({"cascade_sources"}),
        bigquery_jobs=True,
        **grants,  # type: ignore[arg-type]
    )


def job(query: str) -> bytes:
    import json

    return json.dumps(
        {"configuration": {"query": {"query": query, "useLegacySql": False}}}
    ).encode()


EXPORT = (
    "EXPORT DATA OPTIONS(uri='gs://art-bkt/datasets/d/extraction/00000000/staging/0/"
    "part-*.parquet', format='PARQUET', overwrite=true) AS SELECT * FROM "
    "`p-roj1.cascade_sources.t` AS source WHERE `seq` <= @high"
)


def test_an_export_needs_create_and_delete_on_its_bucket_and_read_on_its_tables() -> None:
    allowed = exporter(write=frozenset({"art-bkt"}))
    reader_only = exporter(read=frozenset({"art-bkt"}))

    assert bigquery_denial(allowed, "POST", URL, job(EXPORT)) is None
    assert bigquery_denial(reader_only, "POST", URL, job(EXPORT)) == (
        "storage.objects.create",
        "bucket",
        "art-bkt",
    )
    other_table = EXPORT.replace("cascade_sources", "cascade_predictions")
    assert bigquery_denial(allowed, "POST", URL, job(other_table)) == (
        "bigquery.tables.getData",
        "table",
        "p-roj1:cascade_predictions.t",
    )


@pytest.mark.parametrize(
    "statement",
    [
        "EXPORT DATA WITH CONNECTION `c` OPTIONS(uri='gs://art-bkt/x/*.parquet') AS SELECT 1",
        "EXPORT DATA OPTIONS(uri='gs://art-bkt/x/*.parquet' /* x */) AS SELECT 1",
        "EXPORT DATA OPTIONS(uri='gs://art-bkt/x/*.parquet', uri='gs://other/x/*') AS SELECT 1",
        "EXPORT DATA OPTIONS(uri='gs://art-bkt/x\\'/*.parquet') AS SELECT 1",
        "EXPORT DATA OPTIONS(format='CSV') AS SELECT 1",
        "EXPORT DATA OPTIONS(uri='gs://art-bkt/x/*.parquet') AS DELETE FROM `p-roj1.s.t` WHERE 1=1",
        "EXPORT DATA OPTIONS(uri='gs://art-bkt/x/*.parquet', overwrite=maybe) AS SELECT 1",
        "EXPORT DATA OPTIONS(uri='gs://art-bkt/../../etc/*.parquet') AS SELECT 1",
        "EXPORT DATA OPTIONS(uri='gs://art-bkt/x/./*.parquet') AS SELECT 1",
        "EXPORT DATA OPTIONS(uri='gs://art-bkt//x/*.parquet') AS SELECT 1",
    ],
)
def test_an_export_the_guard_does_not_understand_is_refused(statement: str) -> None:
    allowed = exporter(write=frozenset({"art-bkt", "other"}), tables_write=frozenset({"s"}))

    denial = bigquery_denial(allowed, "POST", URL, job(statement))

    assert denial is not None
    assert denial[0] == "bigquery.tables.getData"


def test_a_statement_after_an_export_is_checked_as_its_own() -> None:
    statement = "EXPORT  DATA OPTIONS(uri='gs://art-bkt/x/*') AS SELECT 1; DROP TABLE `p-roj1.s.t`"

    denial = bigquery_denial(exporter(write=frozenset({"art-bkt"})), "POST", URL, job(statement))

    assert denial == ("bigquery.tables.updateData", "table", "p-roj1:s.t")


def test_an_export_without_overwrite_needs_no_delete() -> None:
    parsed = parse_export_data(
        "EXPORT DATA OPTIONS(uri=\"gs://art-bkt/x/*.csv\", format='CSV') AS (SELECT 1)"
    )

    assert parsed is not None
    assert (parsed.bucket, parsed.overwrite, parsed.query) == ("art-bkt", False, "(SELECT 1)")
