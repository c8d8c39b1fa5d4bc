"""BigQuery's IAM on the local BigQuery: a process's client is refused, with BigQuery's
403, what its topology grants do not cover (the emulator itself answers anyone)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import google.cloud.bigquery as bigquery
import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigquery_storage_v1 import BigQueryReadClient, types

from cascade.batch.sources import BigQueryTableSource
from cascade.core.bigquery_grants import bigquery_denial, read_denial
from cascade.core.grants import LocalIdentity, identity_for
from cascade.core.topology import load_topology
from cascade.core.warehouse import insert_rows, make_bigquery_client
from cascade.core.warehouse_read import make_bigquery_read_client
from cascade.localcloud.local_settings import LocalCloudSettings
from tests.bigquery_emulator import REPO_ROOT, bigquery_client, bigquery_local  # noqa: F401

PROJECT = "cascade-local"
SCHEMA = [bigquery.SchemaField("key", "STRING", mode="REQUIRED")]


def identity(**grants: object) -> LocalIdentity:
    return LocalIdentity(principal="fn@cascade-local.iam.gserviceaccount.com", name="fn", **grants)


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
    assert jobs.bigquery_read_sessions  # batch scoring reads tables with read sessions
    validate = identity_for(topology, "validate", settings)
    assert not validate.tables_write
    assert not validate.tables_read
    assert not validate.bigquery_jobs
    assert not validate.bigquery_read_sessions


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM `p.mine.t`, `p.theirs.t`",
        "SELECT * FROM mine.t, theirs.t WHERE true",
        "SELECT * FROM mine.t CROSS JOIN theirs.t",
        "SELECT (SELECT COUNT(*) FROM theirs.t) FROM mine.t",
        "SELECT * FROM (SELECT * FROM theirs.t)",
        "WITH x AS (SELECT * FROM `p.theirs.t`) SELECT * FROM x",
        "MERGE mine.t USING theirs.t AS s ON true WHEN MATCHED THEN DELETE",
        "SELECT * FROM mine.t, UNNEST(t.items) AS i JOIN theirs.t USING (key)",
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


@pytest.mark.parametrize(
    "query",
    [
        "SELECT k FROM `p.mine.t`, UNNEST(request_payload) AS k",
        "SELECT k FROM mine.t CROSS JOIN UNNEST(t.items) AS k",
        "SELECT n FROM mine.t JOIN UNNEST(t.numbers) AS n ON true",
    ],
)
def test_unnest_is_a_function_not_a_table(query: str) -> None:
    who = identity(tables_read=frozenset({"mine"}), bigquery_jobs=True)
    body = json.dumps({"query": query, "useLegacySql": False}).encode()
    assert bigquery_denial(who, "POST", "http://h/bigquery/v2/projects/p/queries", body) is None


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO `p.mine.t` (key) SELECT key FROM `p.mine.t`",
        "INSERT mine.t (key) VALUES ('a')",
        "CREATE OR REPLACE TABLE `p.mine.copy` AS SELECT * FROM mine.t",
        "CREATE TABLE IF NOT EXISTS mine.copy (key STRING)",
        "MERGE `p.mine.t` USING mine.t AS s ON false WHEN NOT MATCHED THEN INSERT ROW",
        "MERGE mine.t USING mine.t AS s ON true WHEN MATCHED THEN UPDATE SET key = 'b'",
        "MERGE INTO mine.t USING mine.t AS s ON true WHEN MATCHED THEN DELETE",
        "UPDATE mine.t SET key = 'b' WHERE true",
        "DELETE FROM mine.t WHERE true",
        "TRUNCATE TABLE mine.t",
        "DROP TABLE IF EXISTS `p.mine.t`",
    ],
)
def test_a_statement_writing_a_table_needs_write_on_its_dataset(query: str) -> None:
    url = "http://h/bigquery/v2/projects/p/jobs"
    body = json.dumps({"configuration": {"query": {"query": query}}}).encode()
    reader = identity(tables_read=frozenset({"mine"}), bigquery_jobs=True)
    denied = bigquery_denial(reader, "POST", url, body)
    assert denied is not None
    assert denied[0] == "bigquery.tables.updateData"
    assert "mine" in denied[2]
    writer = identity(tables_write=frozenset({"mine"}), bigquery_jobs=True)
    assert bigquery_denial(writer, "POST", url, body) is None


def test_writing_one_dataset_from_another_needs_both_grants() -> None:
    query = "INSERT INTO `p.theirs.t` (key) SELECT key FROM `p.mine.t`"
    body = json.dumps({"configuration": {"query": {"query": query}}}).encode()
    url = "http://h/bigquery/v2/projects/p/jobs"
    who = identity(
        tables_read=frozenset({"mine", "theirs"}),
        tables_write=frozenset(),
        bigquery_jobs=True,
    )
    denied = bigquery_denial(who, "POST", url, body)
    assert denied is not None
    assert denied[2] == "p:theirs.t"


# ------------------------------------------------------------ the Storage Read API (gRPC)

READ = "/google.cloud.bigquery.storage.v1.BigQueryRead/"
CREATE = f"{READ}CreateReadSession"


def read_client_as(local: LocalCloudSettings, who: LocalIdentity) -> Iterator[BigQueryReadClient]:
    settings = local.runtime_settings().model_copy(update={"local_identity": who})
    client = make_bigquery_read_client(settings)
    yield client
    client.transport.close()


def _session_request(dataset: str) -> dict[str, Any]:
    return {
        "parent": f"projects/{PROJECT}",
        "read_session": types.ReadSession(
            table=f"projects/{PROJECT}/datasets/{dataset}/tables/t",
            data_format=types.DataFormat.ARROW,
        ),
        "max_stream_count": 1,
    }


def test_a_read_session_without_the_read_session_user_role_is_refused(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    datasets: dict[str, str],
) -> None:
    who = identity(tables_read=frozenset({datasets["mine"]}))  # no bigquery-read-sessions
    for reader in read_client_as(bigquery_local, who):
        with pytest.raises(gexc.PermissionDenied) as caught:
            reader.create_read_session(**_session_request(datasets["mine"]))
    assert caught.value.code == 403
    assert str(caught.value) == (
        "403 request failed: the user does not have 'bigquery.readsessions.create' "
        f"permission for 'projects/{PROJECT}'"
    )

    # The batch source says that the Storage Read API refused it, and what it needs.
    for client in client_as(bigquery_local, who):
        source = BigQueryTableSource(client, f"{PROJECT}.{datasets['mine']}.t")  # REST: read
        with pytest.raises(gexc.PermissionDenied) as refused:
            list(source.rows())
    message = str(refused.value)
    assert f"BigQuery Storage Read API refused reading {PROJECT}.{datasets['mine']}.t" in message
    assert "'bigquery.readsessions.create' permission" in message
    assert "roles/bigquery.readSessionUser" in message


def test_a_read_session_on_a_table_of_an_ungranted_dataset_is_refused(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    datasets: dict[str, str],
) -> None:
    who = identity(tables_read=frozenset({datasets["mine"]}), bigquery_read_sessions=True)
    for reader in read_client_as(bigquery_local, who):
        with pytest.raises(gexc.PermissionDenied) as caught:
            reader.create_read_session(**_session_request(datasets["theirs"]))
    assert str(caught.value) == (
        "403 request failed: the user does not have 'bigquery.tables.getData' permission "
        f"for 'projects/{PROJECT}/datasets/{datasets['theirs']}/tables/t'"
    )


@pytest.mark.parametrize("grant", ["tables_read", "tables_write"])
def test_a_read_session_with_the_role_and_read_on_the_table_reads_it(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    datasets: dict[str, str],
    grant: str,
) -> None:
    who = identity(**{grant: frozenset({datasets["mine"]})}, bigquery_read_sessions=True)
    for client in client_as(bigquery_local, who):
        source = BigQueryTableSource(client, f"{PROJECT}.{datasets['mine']}.t")
        assert [row.values for row in source.rows()] == [{"key": "a"}]


def test_reading_a_stream_needs_the_read_session_user_role(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    bigquery_client: bigquery.Client,  # noqa: F811
    datasets: dict[str, str],
) -> None:
    """A session another identity opened: its streams are not this one's to read."""
    granted = identity(tables_read=frozenset({datasets["mine"]}), bigquery_read_sessions=True)
    for opener in read_client_as(bigquery_local, granted):
        session = opener.create_read_session(**_session_request(datasets["mine"]))
        (stream,) = session.streams
        assert sum(message.row_count for message in opener.read_rows(stream.name)) == 1
    who = identity(tables_read=frozenset({datasets["mine"]}))
    for reader in read_client_as(bigquery_local, who):
        with pytest.raises(gexc.PermissionDenied, match=r"'bigquery\.readsessions\.getData'"):
            list(reader.read_rows(stream.name))


def test_the_read_guard_refuses_what_it_does_not_know() -> None:
    both = identity(tables_write=frozenset({"mine"}), bigquery_read_sessions=True)
    create = types.CreateReadSessionRequest(
        parent="projects/p",
        read_session=types.ReadSession(table="projects/p/datasets/mine/tables/t"),
    )
    assert read_denial(both, CREATE, create) is None
    assert read_denial(identity(tables_write=frozenset({"mine"})), CREATE, create) == (
        "bigquery.readsessions.create",
        "project",
        "projects/p",
    )
    odd = types.CreateReadSessionRequest(
        parent="projects/p", read_session=types.ReadSession(table="projects/p/datasets/mine")
    )
    assert read_denial(both, CREATE, odd) is not None
    split = types.SplitReadStreamRequest(name="projects/p/locations/us/sessions/s/streams/0")
    assert read_denial(both, f"{READ}SplitReadStream", split) is None
    assert read_denial(identity(), f"{READ}SplitReadStream", split) is not None
    for method in (
        "/google.cloud.bigquery.storage.v1.BigQueryWrite/AppendRows",
        "/google.cloud.bigquery.storage.v1.BigQueryWrite/CreateWriteStream",
        f"{READ}SomethingNew",
        "/google.cloud.bigquery.storage.v1beta2.BigQueryRead/CreateReadSession",
    ):
        assert read_denial(both, method, create) is not None, method
