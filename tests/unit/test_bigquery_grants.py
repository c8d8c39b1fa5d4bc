"""BigQuery's IAM on the local BigQuery: a process's client is refused, with BigQuery's
403, what its topology grants do not cover (the emulator itself answers anyone)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator

import google.cloud.bigquery as bigquery
import pytest
from google.api_core import exceptions as gexc

from cascade.core.bigquery_grants import bigquery_denial
from cascade.core.grants import LocalIdentity, identity_for
from cascade.core.topology import load_topology
from cascade.core.warehouse import insert_rows, make_bigquery_client
from cascade.localcloud.local_settings import LocalCloudSettings
from tests.bigquery_emulator import REPO_ROOT, bigquery_client, bigquery_local  # noqa: F401

PROJECT = "cascade-local"
SCHEMA = [bigquery.SchemaField("key", "STRING", mode="REQUIRED")]


def identity(**grants: object) -> LocalIdentity:
    return LocalIdentity(principal="fn@cascade-local.iam.gserviceaccount.com", name="fn", **grants)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def datasets(bigquery_client: bigquery.Client) -> dict[str, str]:  # noqa: F811
    """Two datasets with a table each: ``mine`` (granted) and ``theirs`` (not)."""
    names = {role: f"{role}_{uuid.uuid4().hex[:6]}" for role in ("mine", "theirs")}
    for name in names.values():
        bigquery_client.create_dataset(name)
        table = bigquery_client.create_table(bigquery.Table(f"{PROJECT}.{name}.t", schema=SCHEMA))
        insert_rows(bigquery_client, table, [{"key": "a"}])
    return names


def client_as(local: LocalCloudSettings, who: LocalIdentity) -> Iterator[bigquery.Client]:
    settings = local.runtime_settings().model_copy(update={"local_identity": who})
    client = make_bigquery_client(settings)
    yield client
    client.close()


@pytest.fixture
def writer(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    datasets: dict[str, str],
) -> Iterator[bigquery.Client]:
    yield from client_as(
        bigquery_local,
        identity(tables_write=frozenset({datasets["mine"]}), bigquery_jobs=True),
    )


@pytest.fixture
def reader_without_jobs(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    datasets: dict[str, str],
) -> Iterator[bigquery.Client]:
    yield from client_as(bigquery_local, identity(tables_read=frozenset({datasets["mine"]})))


def test_a_granted_dataset_is_written_read_and_queried(
    writer: bigquery.Client, datasets: dict[str, str]
) -> None:
    table = writer.create_table(
        bigquery.Table(f"{PROJECT}.{datasets['mine']}.new_{uuid.uuid4().hex[:6]}", schema=SCHEMA)
    )
    insert_rows(writer, table, [{"key": "b"}])
    rows = writer.query(f"SELECT key FROM `{PROJECT}.{datasets['mine']}.t`").result()
    assert [row["key"] for row in rows] == ["a"]
    assert [row["key"] for row in writer.list_rows(table)] == ["b"]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            lambda c, d: c.insert_rows_json(f"{PROJECT}.{d['theirs']}.t", [{"key": "x"}]),
            "Permission bigquery.tables.updateData denied on table",
        ),
        (
            lambda c, d: c.get_table(f"{PROJECT}.{d['theirs']}.t"),
            "Permission bigquery.tables.get denied",
        ),
        (
            lambda c, d: list(c.list_rows(f"{PROJECT}.{d['theirs']}.t", selected_fields=SCHEMA)),
            "Permission bigquery.tables.getData denied",
        ),
        (
            lambda c, d: c.query(f"SELECT key FROM `{PROJECT}.{d['theirs']}.t`").result(),
            "Permission bigquery.tables.getData denied on table",
        ),
        (
            lambda c, d: c.query(
                f"SELECT a.key FROM `{PROJECT}.{d['mine']}.t` a JOIN {d['theirs']}.t b USING (key)"
            ).result(),
            "Permission bigquery.tables.getData denied on table",
        ),
        (
            lambda c, d: c.create_table(
                bigquery.Table(f"{PROJECT}.{d['theirs']}.n", schema=SCHEMA)
            ),
            "Permission bigquery.tables.create denied on dataset",
        ),
        (
            lambda c, d: c.create_dataset(f"new_{uuid.uuid4().hex[:6]}"),
            "Permission bigquery.datasets.create denied",
        ),
        (
            lambda c, d: c.delete_dataset(d["mine"]),
            "Permission bigquery.datasets.delete denied",
        ),
        (
            lambda c, d: c.load_table_from_file(
                io.BytesIO(b"key\nz\n"),
                f"{PROJECT}.{d['theirs']}.t",
                job_config=bigquery.LoadJobConfig(source_format="CSV", skip_leading_rows=1),
            ),
            "Permission bigquery.tables.updateData denied on table",
        ),
    ],
)
def test_what_the_grants_do_not_cover_is_refused_with_bigquerys_403(
    writer: bigquery.Client, datasets: dict[str, str], action: object, message: str
) -> None:
    with pytest.raises(gexc.Forbidden) as caught:
        action(writer, datasets)  # type: ignore[operator]
    assert caught.value.code == 403
    assert message in caught.value.message
    assert caught.value.errors[0]["reason"] == "accessDenied"


def test_reading_is_not_writing(
    reader_without_jobs: bigquery.Client, datasets: dict[str, str]
) -> None:
    table = reader_without_jobs.get_table(f"{PROJECT}.{datasets['mine']}.t")
    assert [row["key"] for row in reader_without_jobs.list_rows(table)] == ["a"]
    with pytest.raises(gexc.Forbidden, match=r"bigquery\.tables\.updateData"):
        reader_without_jobs.insert_rows_json(table, [{"key": "x"}])


def test_a_query_needs_the_job_user_role(
    reader_without_jobs: bigquery.Client, datasets: dict[str, str]
) -> None:
    with pytest.raises(gexc.Forbidden, match=r"does not have bigquery\.jobs\.create permission"):
        reader_without_jobs.query(f"SELECT key FROM `{PROJECT}.{datasets['mine']}.t`").result()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM UNNEST(x) AS t, `weird`",
        "SELECT * FROM `only_one_part`",
        "SELECT * FROM `a..b`",
    ],
)
def test_a_query_naming_tables_in_a_form_not_understood_is_refused(query: str) -> None:
    who = identity(tables_write=frozenset({"mine"}), bigquery_jobs=True)
    body = json.dumps({"configuration": {"query": {"query": query}}}).encode()
    assert bigquery_denial(who, "POST", "http://h/bigquery/v2/projects/p/jobs", body) is not None


def test_unknown_api_shapes_are_refused() -> None:
    who = identity(tables_write=frozenset({"mine"}), bigquery_jobs=True)
    for method, path in [
        ("GET", "/bigquery/v2/projects/p/models"),
        ("POST", "/bigquery/v2/projects/p/datasets/mine/tables/t:setIamPolicy"),
        ("POST", "/bigquery/v2/projects/p/datasets/mine/routines"),
        ("GET", "/storage/v1/b"),
    ]:
        assert bigquery_denial(who, method, f"http://h{path}") is not None, path


def test_the_topology_grants_the_jobs_account_the_predictions_dataset() -> None:
    topology = load_topology(REPO_ROOT / "infra" / "topology.yaml")
    settings = LocalCloudSettings(repo_root=REPO_ROOT).runtime_settings()
    jobs = identity_for(topology, "vertex-jobs", settings)
    assert jobs.tables_write == {"cascade_predictions"}
    assert jobs.bigquery_jobs
    validate = identity_for(topology, "validate", settings)
    assert not validate.tables_write
    assert not validate.tables_read
    assert not validate.bigquery_jobs


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM `p.mine.t`, `p.theirs.t`",
        "SELECT * FROM mine.t, theirs.t WHERE true",
        "SELECT * FROM mine.t CROSS JOIN theirs.t",
        "SELECT (SELECT COUNT(*) FROM theirs.t) FROM mine.t",
        "SELECT * FROM (SELECT * FROM theirs.t)",
        "WITH x AS (SELECT * FROM `p.theirs.t`) SELECT * FROM x",
    ],
)
def test_a_query_reading_an_ungranted_table_in_any_form_is_refused(query: str) -> None:
    who = identity(tables_write=frozenset({"mine"}), bigquery_jobs=True)
    body = json.dumps({"configuration": {"query": {"query": query}}}).encode()
    denied = bigquery_denial(who, "POST", "http://h/bigquery/v2/projects/p/jobs", body)
    assert denied is not None
    assert "theirs" in denied[2]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT a.key, b.key FROM `p.mine.t` a JOIN mine.u b USING (key)",
        "SELECT 1",
        "SELECT key FROM mine.t WHERE key IN ('a, b.c', 'x')",
        "WITH recent AS (SELECT * FROM mine.t), old AS (SELECT 1 AS x) SELECT * FROM recent",
    ],
)
def test_a_query_reading_granted_tables_passes(query: str) -> None:
    who = identity(tables_write=frozenset({"mine"}), bigquery_jobs=True)
    body = json.dumps({"query": query, "useLegacySql": False}).encode()
    assert bigquery_denial(who, "POST", "http://h/bigquery/v2/projects/p/queries", body) is None
