"""BigQuery's IAM, enforced locally: what a process's identity may do to the warehouse.

On Google Cloud a function or job holds ``roles/bigquery.dataViewer`` (``tables_read``)
or ``roles/bigquery.dataEditor`` (``tables_write``) on the topology's warehouse datasets
and ``roles/bigquery.jobUser`` on the project (the ``bigquery-jobs`` api) to run query
and load jobs; BigQuery refuses the rest with HTTP 403 ``accessDenied``. The local
BigQuery answers anyone, so the client's session is wrapped (``guard_bigquery_session``)
and refuses, before sending, every REST call the identity's grants do not cover, with
BigQuery's error body, which the client raises as ``google.api_core.exceptions.Forbidden``.

What a call needs, from its path (``/bigquery/v2/projects/<p>/...``) and, for jobs, the
job configuration in its body:

- dataset: get → read; create, update, delete → refused (Terraform owns datasets);
- tables: list, get, list rows → read; create, update, delete, insertAll → write;
- jobs.insert / jobs.query → ``bigquery.jobs.create``, plus read on every table a query
  reads and write on every table it writes or its destination table
  (``cascade.core.sql_tables``: a conservative scanner that refuses what it cannot
  account for: scripts, unknown statements, parenthesised joins, raw strings, legacy
  SQL); a load's destination → write; an extract's source table or model → read;
  ``EXPORT DATA`` (``cascade.core.export_data``) → its query's reads, and
  ``storage.objects.create`` (and ``.delete`` with ``overwrite=true``) on the bucket of
  its ``uri``, which BigQuery writes as the caller;
- a path with ``.`` or ``..`` segments is refused (the HTTP stack would send another);
- job and query results (the caller's own jobs) → ``bigquery.jobs.create`` holders.

Anything else is refused: the guard refuses what it does not understand.

The Storage Read API (gRPC, ``BigQueryRead``) is guarded the same way on the read
client's channel (``guard_read_channel``, an interceptor): ``CreateReadSession`` needs
``bigquery.readsessions.create`` on the project (``roles/bigquery.readSessionUser``: the
``bigquery-read-sessions`` api) and read on the table's dataset (``getData``);
``ReadRows`` and ``SplitReadStream`` need the same role (``readsessions.getData``,
``readsessions.update``); any other method is refused. A refusal is the status BigQuery
answers, ``PERMISSION_DENIED`` "request failed: the user does not have '<permission>'
permission for '<resource>'", which the client raises as
``google.api_core.exceptions.PermissionDenied``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
import requests

from cascade.core.export_data import ExportData, is_export_data, parse_export_data
from cascade.core.grants import (
    GrpcPermissionDenied,
    LocalIdentity,
    UnaryGuard,
    forbidden_response,
)
from cascade.core.sql_tables import query_tables

__all__ = [
    "BigQueryDenial",
    "ReadSessionGuard",
    "bigquery_denial",
    "guard_bigquery_session",
    "guard_read_channel",
    "read_denial",
]

_PREFIXES = ("/upload/bigquery/v2/projects/", "/bigquery/v2/projects/")
_READ_VERBS = {"GET"}


class BigQueryDenial(tuple[str, str, str]):
    """(permission, resource kind, resource name) that a call needs and the identity lacks."""

    __slots__ = ()


def _denial(permission: str, kind: str, name: str) -> BigQueryDenial:
    return BigQueryDenial((permission, kind, name))


def _dataset_check(
    identity: LocalIdentity,
    project: str,
    dataset: str,
    *,
    write: bool,
    permission: str,
    kind: str,
    name: str,
) -> BigQueryDenial | None:
    allowed = dataset in identity.tables_write or (not write and dataset in identity.tables_read)
    return None if allowed else _denial(permission, kind, name or f"{project}:{dataset}")


def _table_name(project: str, dataset: str, table: str) -> str:
    return f"{project}:{dataset}.{table}"


def _job_denial(
    identity: LocalIdentity, project: str, body: dict[str, Any]
) -> BigQueryDenial | None:
    configuration = body.get("configuration", body)  # jobs.query takes the query itself
    export: ExportData | None = None
    query = configuration.get("query")
    checks: list[tuple[str, str, str, bool]] = []  # project, dataset, table, write
    if isinstance(query, dict) or isinstance(body.get("query"), str):
        text = query.get("query", "") if isinstance(query, dict) else str(body.get("query", ""))
        legacy = (query if isinstance(query, dict) else body).get("useLegacySql") is True
        if not legacy and is_export_data(text):  # its query, and its bucket (below)
            export = parse_export_data(text)
            if export is None:
                return _denial("bigquery.tables.getData", "query", text[:80])
            text = export.query
        tables = None if legacy else query_tables(text, project)
        if tables is None:
            return _denial("bigquery.tables.getData", "query", text[:80])
        checks += [(p, d, t, True) for p, d, t in tables.writes]
        checks += [(p, d, t, False) for p, d, t in tables.reads]
        destination = query.get("destinationTable") if isinstance(query, dict) else None
        if destination:
            checks.append((*_reference(destination, project), True))
    for kind, key, write in (
        ("load", "destinationTable", True),
        ("extract", "sourceTable", False),
        ("extract", "sourceModel", False),
    ):
        section = configuration.get(kind)
        if isinstance(section, dict) and section.get(key):
            checks.append((*_reference(section[key], project), write))
    copy = configuration.get("copy")
    if isinstance(copy, dict):
        for source in copy.get("sourceTables", []) or [copy.get("sourceTable")]:
            if source:
                checks.append((*_reference(source, project), False))
        if copy.get("destinationTable"):
            checks.append((*_reference(copy["destinationTable"], project), True))
    if not set(configuration) & {"query", "load", "extract", "copy"}:
        return _denial("bigquery.jobs.create", "job", "of a kind not understood")
    if not identity.bigquery_jobs:
        return _denial("bigquery.jobs.create", "project", project)
    if export is not None:  # EXPORT DATA writes (and overwrites) as the caller
        for needed in ("create", "delete") if export.overwrite else ("create",):
            if not identity.may(f"storage.objects.{needed}", export.bucket):
                return _denial(f"storage.objects.{needed}", "bucket", export.bucket)
    for table_project, dataset, table, write in checks:
        permission = "bigquery.tables.updateData" if write else "bigquery.tables.getData"
        denied = _dataset_check(
            identity,
            table_project,
            dataset,
            write=write,
            permission=permission,
            kind="table",
            name=_table_name(table_project, dataset, table),
        )
        if denied is not None:
            return denied
    return None


def _reference(reference: Any, project: str) -> tuple[str, str, str]:
    if not isinstance(reference, dict):
        return (project, "", "")
    return (
        str(reference.get("projectId") or project),
        str(reference.get("datasetId", "")),
        str(reference.get("tableId", "")),
    )


def _json_part(body: bytes | None) -> dict[str, Any]:
    """The job resource of a jobs.insert body: plain JSON, or a multipart upload's first
    part (``load_table_from_file``)."""
    if not body:
        return {}
    text = body.decode("utf-8", "replace")
    start = text.find("{")
    if start < 0:
        return {}
    try:
        parsed, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return {"configuration": {"query": {"query": "FROM <unreadable body>"}}}
    return parsed if isinstance(parsed, dict) else {}


def bigquery_denial(
    identity: LocalIdentity, method: str, url: str, body: bytes | None = None
) -> BigQueryDenial | None:
    """What the REST call needs and ``identity`` lacks; None when it may go."""
    path = urlsplit(url).path
    # The HTTP stack resolves "." and ".." before sending (RFC 3986), so the path checked
    # would not be the path sent: refuse them, encoded or not.
    segments = [unquote(segment) for segment in path.split("/")]
    if any(segment in (".", "..") for segment in segments) or "%2e" in path.lower():
        return _denial("bigquery.unknown", "request", path)
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            parts = [unquote(part) for part in path[len(prefix) :].split("/") if part]
            break
    else:
        return _denial("bigquery.unknown", "request", path)
    method = method.upper()
    if not parts:
        return _denial("bigquery.projects.get", "request", path)
    project, rest = parts[0], parts[1:]
    if not rest:
        return _denial("bigquery.projects.get", "project", project)
    collection = rest[0]
    if collection in ("jobs", "queries"):
        if len(rest) == 1 and method == "POST":
            return _job_denial(identity, project, _json_part(body))
        if identity.bigquery_jobs and (method == "GET" or (len(rest) == 1 and method == "PUT")):
            return None  # results of its own jobs; a resumable upload's next chunk
        if identity.bigquery_jobs and len(rest) >= 2 and method == "PUT":
            return None
        return _denial("bigquery.jobs.create", "project", project)
    if collection != "datasets":
        return _denial("bigquery.projects.update", "project", project)
    if len(rest) == 1:  # the project's datasets
        if method == "GET":
            return None  # BigQuery lists only what the caller may see
        return _denial("bigquery.datasets.create", "project", project)
    dataset = rest[1]
    if len(rest) == 2:
        if method in _READ_VERBS:
            return _dataset_check(
                identity,
                project,
                dataset,
                write=False,
                permission="bigquery.datasets.get",
                kind="dataset",
                name="",
            )
        return _denial(
            f"bigquery.datasets.{'delete' if method == 'DELETE' else 'update'}",
            "dataset",
            f"{project}:{dataset}",
        )
    if rest[2] != "tables":
        return _denial("bigquery.datasets.update", "dataset", f"{project}:{dataset}")
    if len(rest) == 3:  # the dataset's tables: list, or create
        write = method != "GET"
        permission = "bigquery.tables.create" if write else "bigquery.tables.list"
        return _dataset_check(
            identity, project, dataset, write=write, permission=permission, kind="dataset", name=""
        )
    table = rest[3]
    action = rest[4] if len(rest) > 4 else ""
    if action == "insertAll" and method == "POST":
        permission, write = "bigquery.tables.updateData", True
    elif action == "data" and method == "GET":
        permission, write = "bigquery.tables.getData", False
    elif not action and method == "GET":
        permission, write = "bigquery.tables.get", False
    elif not action and method in ("PATCH", "PUT", "DELETE"):
        permission = "bigquery.tables.delete" if method == "DELETE" else "bigquery.tables.update"
        write = True
    else:
        return _denial(
            "bigquery.tables.setIamPolicy", "table", _table_name(project, dataset, table)
        )
    return _dataset_check(
        identity,
        project,
        dataset,
        write=write,
        permission=permission,
        kind="table",
        name=_table_name(project, dataset, table),
    )


def _forbidden(
    identity: LocalIdentity, method: str, url: str, denial: BigQueryDenial
) -> requests.Response:
    permission, kind, name = denial
    if permission == "bigquery.jobs.create":
        message = (
            f"Access Denied: Project {name}: User does not have bigquery.jobs.create "
            f"permission in project {name}."
        )
    else:
        label = kind.capitalize()
        message = (
            f"Access Denied: {label} {name}: Permission {permission} denied on {kind} "
            f"{name} (or it may not exist)."
        )
    return forbidden_response(
        method, url, message, reason="accessDenied", status="PERMISSION_DENIED"
    )


def guard_bigquery_session(session: requests.Session, identity: LocalIdentity) -> requests.Session:
    """``session`` answering 403, as BigQuery does, for what ``identity`` lacks."""
    send = session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        data = kwargs.get("data")
        body = data if isinstance(data, bytes) else data.encode() if isinstance(data, str) else None
        if body is None and kwargs.get("json") is not None:
            body = json.dumps(kwargs["json"]).encode()
        denied = bigquery_denial(identity, method, url, body)
        if denied is not None:
            return _forbidden(identity, method, url, denied)
        return send(method, url, *args, **kwargs)

    session.request = request  # type: ignore[method-assign, assignment]
    return session


# ---------------------------------------------------------------- Storage Read API (gRPC)

_READ_SERVICE = "/google.cloud.bigquery.storage.v1.BigQueryRead/"
_TABLE_PATH = re.compile(r"projects/([^/]+)/datasets/([^/]+)/tables/([^/@$]+)")


def read_denial(identity: LocalIdentity, method: str, request: Any) -> BigQueryDenial | None:
    """What the Storage Read API call ``method`` (``/package.Service/Method``) needs and
    ``identity`` lacks; None when it may go."""
    name = method.removeprefix(_READ_SERVICE)
    if name == "CreateReadSession":
        parent = str(getattr(request, "parent", "") or "")
        if not identity.bigquery_read_sessions:
            return _denial("bigquery.readsessions.create", "project", parent)
        session = getattr(request, "read_session", None)
        table = str(getattr(session, "table", "") or "")
        found = _TABLE_PATH.fullmatch(table)
        if found is None:
            return _denial("bigquery.tables.getData", "table", table)
        dataset = found.group(2)
        if dataset in identity.tables_read or dataset in identity.tables_write:
            return None
        return _denial("bigquery.tables.getData", "table", table)
    stream = str(getattr(request, "read_stream", "") or getattr(request, "name", "") or "")
    if name == "ReadRows":
        permission = "bigquery.readsessions.getData"
    elif name == "SplitReadStream":
        permission = "bigquery.readsessions.update"
    else:
        return _denial(method, "request", stream or method)
    return None if identity.bigquery_read_sessions else _denial(permission, "stream", stream)


def _read_refusal(denial: BigQueryDenial) -> GrpcPermissionDenied:
    permission, _, resource = denial
    return GrpcPermissionDenied(
        f"request failed: the user does not have '{permission}' permission for '{resource}'"
    )


class ReadSessionGuard(
    UnaryGuard,
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Refuses, before sending, every Storage Read API call ``identity`` may not make."""

    def _check(self, method: str, request: Any) -> None:
        denied = read_denial(self._identity, method, request)
        if denied is not None:
            raise _read_refusal(denied)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        raise _read_refusal(_denial(client_call_details.method, "request", "a stream"))

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        raise _read_refusal(_denial(client_call_details.method, "request", "a stream"))


def guard_read_channel(channel: grpc.Channel, identity: LocalIdentity) -> grpc.Channel:
    """``channel`` refusing, as BigQuery does, the Storage Read API calls ``identity``
    lacks the grants for."""
    return grpc.intercept_channel(channel, ReadSessionGuard(identity))
