"""BigQuery, the warehouse: one client factory, and row inserts as strict as BigQuery's.

``make_bigquery_client`` returns the real ``google-cloud-bigquery`` client, pointed at
the local BigQuery (``BIGQUERY_EMULATOR_HOST``) under the local cloud, where a process
with a topology identity is refused what its grants do not cover
(``cascade.core.bigquery_grants``).

``make_bigquery_read_client`` returns the BigQuery Storage Read API's client
(``google-cloud-bigquery-storage``: Arrow over gRPC, how batch scoring reads a whole
table): Google's endpoint in the cloud; under the local cloud the local BigQuery's gRPC
port (``BIGQUERY_STORAGE_EMULATOR_HOST``) on an insecure channel, anonymous, with the
identity's grants checked on the channel (``bigquery_grants.guard_read_channel``).
``read_client_for`` is the read client that goes with a client ``make_bigquery_client``
made (same settings, same identity).

``insert_rows`` streams rows with ``insertAll`` (``Client.insert_rows_json``) in
requests within BigQuery's streaming quotas (at most 500 rows, the recommended batch,
and under the 10 MB request limit). It checks each row against the table's schema first,
the way BigQuery's ``insertAll`` refuses it: a field the table does not have ("no such
field"), a REQUIRED field missing or null, a value of the wrong type. The local BigQuery
accepts all three silently; checking here makes both answer alike, and names the row and
the field.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring as _quote  # what dumps writes for a str
from typing import Any

import google.cloud.bigquery as bigquery
from google.api_core.exceptions import Conflict, NotFound
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession

from cascade.core.bigquery_grants import guard_bigquery_session
from cascade.core.settings import Settings
from cascade.core.warehouse_names import table_id

__all__ = [
    "MAX_INSERT_BYTES",
    "MAX_INSERT_ROWS",
    "JsonText",
    "RowError",
    "WarehouseError",
    "check_row",
    "insert_rows",
    "load_rows",
    "make_bigquery_client",
    "settings_of",
    "table_id",
]

MAX_INSERT_ROWS = 500
"""Rows per insertAll request: BigQuery's recommended batch (its hard limit is 50,000)."""
MAX_INSERT_BYTES = 9 * 1024 * 1024
"""Bytes per insertAll request, under BigQuery's 10 MB HTTP request limit."""

_INT = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


_SETTINGS_OF: weakref.WeakKeyDictionary[bigquery.Client, Settings] = weakref.WeakKeyDictionary()
"""The settings each client of ``make_bigquery_client`` was made with (``settings_of``)."""


def make_bigquery_client(settings: Settings) -> bigquery.Client:
    """BigQuery; the local BigQuery (``BIGQUERY_EMULATOR_HOST``) when set."""
    client = _bigquery_client(settings)
    _SETTINGS_OF[client] = settings
    return client


def settings_of(client: bigquery.Client) -> Settings | None:
    """The settings ``client`` was made with by ``make_bigquery_client`` (else None)."""
    return _SETTINGS_OF.get(client)


def _bigquery_client(settings: Settings) -> bigquery.Client:
    if settings.bigquery_emulator_host:
        identity = settings.local_identity
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        # Its topology grants, refused as BigQuery's IAM refuses (bigquery_grants), on an
        # AuthorizedSession (what the client closes), anonymous as the emulator wants.
        session = (
            None
            if identity is None
            else guard_bigquery_session(
                AuthorizedSession(anonymous),  # type: ignore[no-untyped-call]
                identity,
            )
        )
        return bigquery.Client(
            project=settings.project,
            credentials=anonymous,
            client_options={"api_endpoint": settings.bigquery_emulator_host},
            _http=session,
        )
    return bigquery.Client(project=settings.project)


@dataclass(frozen=True)
class RowError:
    """One refused row: its index in the batch, the field, and BigQuery's reason."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.index}, field {self.field!r}: {self.message}"


class WarehouseError(RuntimeError):
    """BigQuery refused rows (or the check did, as BigQuery would)."""

    def __init__(self, table: str, errors: Sequence[RowError]) -> None:
        self.table = table
        self.errors = list(errors)
        shown = "; ".join(str(error) for error in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"{table}: {len(self.errors)} row(s) refused: {shown}{more}")


@dataclass(frozen=True)
class _Field:
    """A schema field's name, type and mode, read once (``SchemaField``'s properties
    are computed at every access, and ``Table.schema`` builds new fields each time)."""

    name: str
    kind: str
    mode: str
    fields: dict[str, _Field]


def _compile(schema: Sequence[bigquery.SchemaField]) -> dict[str, _Field]:
    """``schema``'s fields by lower-cased name (BigQuery's names are case-insensitive)."""
    return {
        field.name.lower(): _Field(
            field.name, field.field_type.upper(), field.mode, _compile(field.fields)
        )
        for field in schema
    }


def _type_error(kind: str, value: Any) -> str | None:
    if kind in ("STRING", "JSON"):
        ok = isinstance(value, str)
    elif kind in ("INTEGER", "INT64"):
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and bool(_INT.fullmatch(value))
        )
    elif kind in ("FLOAT", "FLOAT64", "NUMERIC", "BIGNUMERIC"):
        # JSON has no NaN or infinity: BigQuery takes them as the strings below (FLOAT64).
        ok = (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ) or (kind.startswith("FLOAT") and value in ("NaN", "Infinity", "-Infinity"))
        if kind in ("NUMERIC", "BIGNUMERIC") and isinstance(value, str):
            ok = bool(_DECIMAL.fullmatch(value))  # exact decimals travel as strings
    elif kind in ("BOOLEAN", "BOOL"):
        ok = isinstance(value, bool)
    elif kind in ("TIMESTAMP", "DATETIME", "DATE"):
        ok = isinstance(value, str) and _parses_as_time(value)
    elif kind in ("RECORD", "STRUCT"):
        ok = isinstance(value, Mapping)
    else:
        ok = True  # types Cascade does not write: BigQuery's own check applies
    return None if ok else f"cannot convert value to {kind.lower()}: {value!r:.80}"


@functools.lru_cache(maxsize=4096)
def _parses_as_time(value: str) -> bool:
    # Cached: a batch writes the same few timestamps on thousands of rows.
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def check_row(
    schema: Sequence[bigquery.SchemaField], row: Mapping[str, Any], index: int
) -> list[RowError]:
    """What BigQuery's insertAll would refuse in ``row`` (nested records included)."""
    return _check(_compile(schema), row, index)


def _check_rows(table: bigquery.Table, rows: Sequence[Mapping[str, Any]]) -> list[RowError]:
    """``check_row`` of every row, the table's schema read once (column by column first:
    when every value passes there, no row has an error to report)."""
    fields = _compile(table.schema)
    if _columns_pass(fields, rows):
        return []
    return [error for index, row in enumerate(rows) for error in _check(fields, row, index)]


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return (type(value) is float and math.isfinite(value)) or type(value) is int


_PLAIN_CHECKS: dict[str, Callable[[Any], bool]] = {
    "STRING": lambda value: type(value) is str or type(value) is JsonText,
    "JSON": lambda value: type(value) is str or type(value) is JsonText,
    "INTEGER": _is_int,
    "INT64": _is_int,
    "FLOAT": _is_number,
    "FLOAT64": _is_number,
    "BOOLEAN": lambda value: type(value) is bool,
    "BOOL": lambda value: type(value) is bool,
    "TIMESTAMP": lambda value: type(value) is str and _parses_as_time(value),
}
"""A fast, narrower acceptance per type: what passes here passes ``_type_error``; what
does not is checked row by row, which has the last word and the messages."""


def _columns_pass(fields: dict[str, _Field], rows: Sequence[Mapping[str, Any]]) -> bool:
    """True when every row is plainly valid: exact field names only, required fields
    present, every value of the simplest type of its column (no records, no lists)."""
    names = {field.name for field in fields.values()}
    if not all(row.keys() <= names for row in rows):
        return False
    for field in fields.values():
        accept = _PLAIN_CHECKS.get(field.kind)
        if accept is None or field.mode == "REPEATED":
            return False
        values = [row.get(field.name) for row in rows]
        if field.mode == "REQUIRED":
            if not all(value is not None and accept(value) for value in values):
                return False
        elif not all(value is None or accept(value) for value in values):
            return False
    return True


def _check(fields: dict[str, _Field], row: Mapping[str, Any], index: int) -> list[RowError]:
    errors = [
        RowError(index, name, f"no such field: {name}.")
        for name in row
        if name.lower() not in fields
    ]
    present = {name.lower(): value for name, value in row.items()}
    for key, field in fields.items():
        value = present.get(key)
        if value is None:
            if field.mode == "REQUIRED":
                errors.append(RowError(index, field.name, f"Missing required field: {field.name}."))
            continue
        values = value if field.mode == "REPEATED" else [value]
        if field.mode == "REPEATED" and not isinstance(value, list):
            errors.append(RowError(index, field.name, "a repeated field takes a list"))
            continue
        for item in values:
            if field.kind in ("RECORD", "STRUCT") and isinstance(item, Mapping):
                errors.extend(
                    RowError(index, f"{field.name}.{error.field}", error.message)
                    for error in _check(field.fields, item, index)
                )
                continue
            message = _type_error(field.kind, item)
            if message is not None:
                errors.append(RowError(index, field.name, message))
    return errors


def _batches(rows: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int, list[Mapping[str, Any]]]]:
    batch: list[Mapping[str, Any]] = []
    start, size = 0, 0
    for index, row in enumerate(rows):
        row_size = len(json.dumps(row, default=str)) + 64
        if row_size > MAX_INSERT_BYTES:
            raise WarehouseError(
                "insert", [RowError(index, "", f"the row is {row_size} bytes, over the limit")]
            )
        if batch and (len(batch) >= MAX_INSERT_ROWS or size + row_size > MAX_INSERT_BYTES):
            yield start, batch
            start, batch, size = index, [], 0
        batch.append(row)
        size += row_size
    if batch:
        yield start, batch


def insert_rows(
    client: bigquery.Client,
    table: bigquery.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    row_ids: Sequence[str] | None = None,
) -> None:
    """Stream ``rows`` into ``table`` (its schema fetched), all checked before any is
    sent. ``row_ids`` (insertId) let BigQuery drop a retried batch's duplicates."""
    if row_ids is not None and len(row_ids) != len(rows):
        raise ValueError("one row id per row")
    errors = _check_rows(table, rows)
    name = f"{table.project}.{table.dataset_id}.{table.table_id}"
    if errors:
        raise WarehouseError(name, errors)
    for start, batch in _batches(rows):
        ids = None if row_ids is None else list(row_ids[start : start + len(batch)])
        refused = client.insert_rows_json(table, batch, row_ids=ids)
        if refused:
            raise WarehouseError(
                name,
                [
                    RowError(
                        start + int(entry.get("index", 0)),
                        str(problem.get("location", "")),
                        str(problem.get("message", problem)),
                    )
                    for entry in refused
                    for problem in entry.get("errors", [{}])
                ],
            )


def _checked(table: bigquery.Table, rows: Sequence[Mapping[str, Any]]) -> str:
    """``table``'s name, once every row passed ``check_row`` (else WarehouseError)."""
    name = f"{table.project}.{table.dataset_id}.{table.table_id}"
    errors = _check_rows(table, rows)
    if errors:
        raise WarehouseError(name, errors)
    return name


class JsonText(str):
    """JSON text Cascade itself produced with ``json.dumps`` (so valid, and one line): a
    load job takes it as the value it holds without its being parsed and written again.
    Any other ``str`` for a JSON column is parsed first (a load refuses invalid JSON)."""

    __slots__ = ()


_LINE_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
"""The encoder of values with no shortcut below (records, lists, parsed JSON)."""


def _json_value(kind: str | None, value: Any) -> str:
    """``value`` as JSON text, as ``json.dumps(ensure_ascii=False, allow_nan=False)``
    writes it, with shortcuts for the common types (one encoder call per row costs more
    than a batch's scoring); a JSON column's text is the JSON value it holds (a load job,
    unlike insertAll, would keep a string as a JSON string)."""
    if kind == "JSON" and isinstance(value, str):
        return str(value) if type(value) is JsonText else _LINE_JSON.encode(json.loads(value))
    if type(value) is str:
        return _quote(value)
    if value is None:
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
        return float.__repr__(value)
    return _LINE_JSON.encode(value)


def _load_line(kinds: Mapping[str, str], row: Mapping[str, Any], names: dict[str, str]) -> str:
    """One NDJSON line of ``row``. ``kinds``: each field's type by name; ``names``: each
    field's name as JSON text (filled as met: the same few names on every row)."""
    members = []
    for name, value in row.items():
        quoted = names.get(name)
        if quoted is None:
            quoted = names[name] = _quote(name)
        members.append(f"{quoted}: {_json_value(kinds.get(name), value)}")
    return "{" + ", ".join(members) + "}"


def load_rows(
    client: bigquery.Client,
    table: bigquery.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    job_id: str,
) -> bool:
    """Append ``rows`` to ``table`` with one load job named ``job_id`` (derived by the
    caller from what the rows are, so a retry reuses it); False when that job already
    ran. Every row is checked first, as ``insert_rows`` does; the load accepts no bad
    record. BigQuery refuses a second job with the same id (409): that is what makes a
    retried load harmless, and it is checked here before loading, as the local BigQuery
    does not refuse it."""
    errors = _check_rows(table, rows)
    name = f"{table.project}.{table.dataset_id}.{table.table_id}"
    if errors:
        raise WarehouseError(name, errors)
    if not rows:
        return False
    try:
        existing = client.get_job(job_id)
    except NotFound:
        existing = None
    if existing is not None:
        existing.result()  # a load still running finishes (or raises) first
        return False
    schema = list(table.schema)
    kinds = {field.name: field.field_type.upper() for field in schema}
    names: dict[str, str] = {}
    data = "".join(_load_line(kinds, row, names) + "\n" for row in rows).encode()
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        schema=schema,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        max_bad_records=0,
    )
    try:
        job = client.load_table_from_file(io.BytesIO(data), name, job_config=config, job_id=job_id)
    except Conflict:  # a concurrent retry created it first
        client.get_job(job_id).result()
        return False
    job.result()
    return True
