"""Attacks on the local BigQuery IAM guard (cascade.core.bigquery_grants) and on the
names batch collection and hybrid heads derive tables from. Pure functions: no cloud.

Each case was a way past the guard (or a collision, or a forged job collected) found by
review; each is refused now (``cascade.core.sql_tables``, the path check in
``bigquery_denial``, ``tables.table_prefix``, the checks in ``steps.batch_collect``)."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import create_autospec

import google.cloud.bigquery as bigquery
import pytest
from google.cloud import aiplatform_v1 as vertex

from cascade.batch.collect import CollectedBatch, VertexBatchOutput
from cascade.batch.head import head_table_id
from cascade.batch.tables import BatchManifest, output_tables
from cascade.core.bigquery_grants import bigquery_denial
from cascade.core.grants import LocalIdentity
from cascade.steps import batch_collect
from cascade.steps.batch_collect import collect_jobs
from tests.unit.batch.test_collect import _job, _spec, ctx  # noqa: F401 - fixture
from tests.unit.conftest import clock  # noqa: F401 - fixture

JOBS = "http://h/bigquery/v2/projects/p/jobs"
BASE = "http://h/bigquery/v2/projects/p"


def _writer_of_mine() -> LocalIdentity:
    return LocalIdentity(
        principal="fn@p.iam.gserviceaccount.com",
        name="fn",
        tables_write=frozenset({"mine"}),
        bigquery_jobs=True,
    )


def _query(query: str) -> Any:
    body = json.dumps({"configuration": {"query": {"query": query}}}).encode()
    return bigquery_denial(_writer_of_mine(), "POST", JOBS, body)


# Found in review (now refused): strip -- / # / /* */ comments (and string literals) before
# matching; treat a comment as whitespace between keyword and name.
@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM mine.t JOIN/**/theirs.t ON true",
        "SELECT * FROM mine.t,/**/theirs.t",
        "INSERT/**/theirs.t SELECT * FROM mine.t",
        "SELECT 1; DELETE/**/theirs.t WHERE true",
        "UPDATE/**/theirs.t SET key = 'x' WHERE true; SELECT 1 FROM mine.t",
    ],
)
def test_a_comment_between_keyword_and_table_does_not_hide_it(query: str) -> None:
    assert _query(query) is not None


# Found in review (now refused): treat "(" after FROM / JOIN / "," as a parenthesised join, not
# only a subquery: find the names inside it (or refuse a "(" not followed by SELECT / WITH).
@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM (theirs.t CROSS JOIN mine.t)",
        "SELECT * FROM mine.t JOIN (theirs.t CROSS JOIN mine.u) ON true",
    ],
)
def test_a_parenthesised_join_is_refused(query: str) -> None:
    assert _query(query) is not None


# Found in review (now refused): the comma-join search stops at the first ")" (TABLESAMPLE (...),
# PIVOT(...)); find every FROM-list item, or refuse a FROM clause with a ")" before a comma.
@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM mine.t TABLESAMPLE SYSTEM (10 PERCENT), theirs.t",
        "SELECT * FROM mine.t PIVOT(SUM(x) FOR y IN ('a')), theirs.t",
    ],
)
def test_a_comma_join_after_a_parenthesis_is_checked(query: str) -> None:
    assert _query(query) is not None


# Found in review (now refused): read CLONE / COPY / LIKE's source table as a read (or refuse
# them).
@pytest.mark.parametrize(
    "query",
    [
        "CREATE TABLE mine.x CLONE theirs.t",
        "CREATE TABLE mine.x COPY theirs.t",
        "CREATE TABLE mine.x LIKE theirs.t",
    ],
)
def test_create_table_from_another_table_checks_the_read(query: str) -> None:
    assert _query(query) is not None


# Found in review (now refused): allow-list statement kinds (split statements on ";" outside
# literals; only SELECT / WITH / INSERT / MERGE / UPDATE / DELETE / TRUNCATE / CREATE [OR REPLACE]
# TABLE / DROP TABLE pass); refuse VIEW / SCHEMA / ALTER / FUNCTION / PROCEDURE / CALL / EXECUTE
# IMMEDIATE / LOAD DATA and any other statement. _NO_TABLE_QUERY must match the whole text (one
# statement), not just its start.
@pytest.mark.parametrize(
    "query",
    [
        "CREATE VIEW theirs.v AS SELECT * FROM mine.t",
        "CREATE MATERIALIZED VIEW theirs.v AS SELECT * FROM mine.t",
        "SELECT 1; DROP SCHEMA theirs CASCADE",
        "SELECT 1; ALTER TABLE theirs.t DROP COLUMN key",
        "SELECT 1; ALTER TABLE theirs.t RENAME TO gone",
        "SELECT 1; DROP VIEW theirs.v",
        "SELECT 1; CREATE SCHEMA evil",
        "SELECT 1; CREATE OR REPLACE FUNCTION theirs.f() AS (1)",
        "SELECT 1; CALL theirs.proc()",
        "SELECT 1; EXECUTE IMMEDIATE REVERSE('eurt EREHW t.srieht ETELED')",
        "SELECT 1; EXECUTE IMMEDIATE @q",
        "SELECT 1 FROM mine.t; EXECUTE IMMEDIATE 'SELECT * FROM ' || 'theirs' || '.t'",
    ],
)
def test_a_statement_the_guard_does_not_know_is_refused(query: str) -> None:
    assert _query(query) is not None


# Found in review (now refused): BigQuery reads `a.b`.c as project a, dataset b, table c; a
# backquoted part followed by ".name" must be joined with it (or refused), not read alone as
# dataset.table.
def test_a_backquoted_prefix_is_refused() -> None:
    assert _query("SELECT * FROM `mine.t`.x") is not None


# Found in review (now refused): refuse useLegacySql=true (its [project:dataset.table] names are
# not parsed).
def test_legacy_sql_is_refused() -> None:
    body = json.dumps(
        {"query": "SELECT key FROM mine.t, [p:theirs.t]", "useLegacySql": True}
    ).encode()
    assert bigquery_denial(_writer_of_mine(), "POST", f"{BASE}/queries", body) is not None


# Found in review (now refused): check extract.sourceModel (bigquery.models.export / getData on
# its dataset).
def test_an_extract_of_a_model_in_an_ungranted_dataset_is_refused() -> None:
    body = json.dumps(
        {
            "configuration": {
                "extract": {
                    "sourceModel": {"projectId": "p", "datasetId": "theirs", "modelId": "m"},
                    "destinationUris": ["gs://b/m"],
                }
            }
        }
    ).encode()
    assert bigquery_denial(_writer_of_mine(), "POST", JOBS, body) is not None


# Found in review (now refused): requests/urllib3 remove "." and ".." segments before sending, so
# the guard must too (posixpath-style normalisation of the path) or refuse any "."/".." segment
# and any path longer than the API's shapes (len(rest) > 5).
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/datasets/mine/tables/t/data/../../../../theirs/tables/t/data"),
        ("POST", "/datasets/mine/tables/t/insertAll/../../../../theirs/tables/t/insertAll"),
        ("GET", "/jobs/x/../../datasets/theirs/tables/t/data"),
        ("PUT", "/jobs/x/../../datasets/theirs/tables/t"),
    ],
)
def test_dot_segments_in_a_path_are_refused(method: str, path: str) -> None:
    body = json.dumps({"rows": [{"json": {"key": "x"}}]}).encode() if method != "GET" else None
    assert bigquery_denial(_writer_of_mine(), method, BASE + path, body) is not None


# ------------------------------------------------------------------------ derived names


# Found in review (now refused): dataset names may hold "-" and "_", so replacing "-" by "_" maps
# two datasets onto one table; encode injectively (e.g. "-" -> "__" after escaping "_", or a short
# digest).
def test_two_datasets_never_share_a_head_table() -> None:
    batch = "0123456789abcdef0123456789abcdef"
    assert head_table_id("p", "preds", "credit-a", batch) != head_table_id(
        "p", "preds", "credit_a", batch
    )


def test_two_datasets_never_share_a_predictions_table() -> None:
    assert output_tables("p", "credit-a", "1") != output_tables("p", "credit_a", "1")


# Found in review (now refused): _collect must check the job's output dataset is
# <project>.<predictions dataset> (and its model is the version's vertex_model) before copying its
# rows into Cascade's tables and the store: labels are set by whoever creates the job.
def test_a_job_labelled_as_cascades_writing_elsewhere_is_not_collected(
    ctx: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected: list[VertexBatchOutput] = []

    def fake_collect(output: VertexBatchOutput, **options: Any) -> CollectedBatch:
        collected.append(output)
        return CollectedBatch(BatchManifest.model_construct(), skipped=False)

    monkeypatch.setattr(batch_collect, "collect_vertex_output", fake_collect)
    monkeypatch.setattr(batch_collect, "read_transform_spec", lambda artifacts, run_id: _spec())
    forged = _job(vertex.JobState.JOB_STATE_SUCCEEDED)
    forged.output_info.bigquery_output_dataset = "bq://attacker-project.evil"
    forged.model = "projects/attacker/locations/europe-west4/models/other@1"

    report = collect_jobs(
        ctx,
        [forged],
        bigquery_client=create_autospec(bigquery.Client, instance=True),
        make_store=lambda: None,
    )

    assert collected == []
    assert list(report.failures) == [forged.name]
