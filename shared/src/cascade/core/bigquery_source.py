"""A dataset's BigQuery source (``bigquery_source`` of its pipeline config) and the SQL
that extracts it incrementally.

A source is a table or a query, plus a watermark column:

- ``table``: ``project.dataset.table``, or ``<warehouse>.<table>`` naming a logical
  warehouse dataset of the topology (``sources.events``: the real dataset id is derived by
  ``Settings.warehouse_dataset``). Every part is a checked identifier and the name is
  always written backquoted: names are data, never SQL.
- ``query``: the user's own GoogleSQL, which must be one SELECT (or WITH ... SELECT)
  statement that only reads tables (``cascade.core.sql_tables`` must account for every
  table it touches; no ``;``, no DML, DDL or scripting). It is wrapped as a subquery.
- ``watermark``: ``{column, type}``, type TIMESTAMP, DATETIME, DATE or INT64. An
  extraction exports the rows with ``low < column <= high``: ``low`` the previous
  extraction's ``high``, ``high`` the column's maximum read *before* the export. Values
  travel as query parameters, never inside the SQL text. Rows whose watermark is NULL,
  or that arrive later with a watermark at or below an extracted ``high``, are never
  extracted: the column must grow with the rows' arrival (an ingestion time, a sequence).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cascade.core.sql_tables import query_tables

__all__ = [
    "MAX_QUERY_CHARS",
    "BigQuerySource",
    "WatermarkConfig",
    "WatermarkType",
    "WatermarkValue",
    "check_source_query",
    "decode_watermark",
    "encode_watermark",
    "export_statement",
    "max_watermark_statement",
]

WatermarkType = Literal["TIMESTAMP", "DATETIME", "DATE", "INT64"]
WatermarkValue = datetime | date | int
WarehouseNamer = Callable[[str], str]
"""The real dataset id of a logical warehouse dataset (``Settings.warehouse_dataset``)."""
MAX_QUERY_CHARS = 100_000
"""Longest query source accepted (BigQuery's own limit is 1,024K characters)."""

_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_DATASET = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_WAREHOUSE = re.compile(r"[a-z][a-z0-9-]{0,29}")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_SELECT = re.compile(r"^\s*(?:SELECT|WITH)\b", re.IGNORECASE)
_LEXEMES = re.compile(
    r"'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\""  # triple-quoted literals
    r"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\"|`[^`]*`"  # literals, quoted names
    r"|/\*.*?\*/|(?:--|#)[^\n]*",  # comments
    re.DOTALL,
)
"""What holds text that is not SQL, matched in one left-to-right pass (a quote inside
a comment, or a comment marker inside a literal, is what it is inside)."""
_EXPORT_URI = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]/[A-Za-z0-9._/=-]{1,900}/")


class WatermarkConfig(BaseModel):
    """The column whose growth tells new rows from extracted ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(..., description="A column of the source (letters, digits, _).")
    type: WatermarkType = Field(..., description="TIMESTAMP, DATETIME, DATE or INT64.")

    @field_validator("column")
    @classmethod
    def _plain_column(cls, value: str) -> str:
        if not _COLUMN.fullmatch(value):
            raise ValueError(
                f"not a column name: {value[:80]!r} (letters, digits and _, not starting "
                "with a digit, at most 300 characters)"
            )
        return value


class BigQuerySource(BaseModel):
    """Where a dataset's rows come from in BigQuery: a table or a query, never both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str | None = Field(
        None, description="project.dataset.table, or <warehouse dataset>.<table>."
    )
    query: str | None = Field(None, description="One SELECT statement (read only).")
    watermark: WatermarkConfig

    @field_validator("table")
    @classmethod
    def _checked_table(cls, value: str | None) -> str | None:
        if value is not None:
            _table_parts(value)
        return value

    @field_validator("query")
    @classmethod
    def _one_select(cls, value: str | None) -> str | None:
        if value is not None:
            check_source_query(value)
        return value

    @model_validator(mode="after")
    def _table_or_query(self) -> BigQuerySource:
        if (self.table is None) == (self.query is None):
            raise ValueError("a BigQuery source is either a table or a query, not both or neither")
        return self

    def relation(self, project: str, warehouse_dataset: WarehouseNamer) -> str:
        """The source as a FROM item: a backquoted table id or a parenthesised query."""
        if self.query is not None:
            return f"(\n{self.query}\n)"
        assert self.table is not None  # _table_or_query
        parts = _table_parts(self.table)
        if len(parts) == 2:
            warehouse, table = parts
            return f"`{project}.{warehouse_dataset(warehouse)}.{table}`"
        return f"`{'.'.join(parts)}`"


def _table_parts(value: str) -> tuple[str, ...]:
    parts = tuple(value.split("."))
    if len(parts) == 3 and (
        _PROJECT.fullmatch(parts[0]) and _DATASET.fullmatch(parts[1]) and _TABLE.fullmatch(parts[2])
    ):
        return parts
    if len(parts) == 2 and _WAREHOUSE.fullmatch(parts[0]) and _TABLE.fullmatch(parts[1]):
        return parts
    raise ValueError(
        f"not a table: {value[:120]!r}: write project.dataset.table, or "
        "<warehouse dataset>.<table> for a dataset of the topology's warehouse (letters, "
        "digits and _ in names, - in project and warehouse names only)"
    )


def check_source_query(query: str) -> str:
    """``query`` when it is one read-only SELECT the BigQuery guard can account for."""
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in query:
        raise ValueError("the query holds a NUL character")
    tables = query_tables(query, "p")
    if tables is None:
        raise ValueError(
            "the query is not one plain SELECT whose tables can all be named (no scripts, "
            "unterminated comments or strings, raw strings, parenthesised joins)"
        )
    if tables.writes or not _SELECT.match(_without_comments(query)):
        raise ValueError("the query must be a single SELECT statement that only reads tables")
    if _statement_count(query) != 1:
        raise ValueError("the query must be a single statement: no ';'")
    if not _balanced(query):
        # Cascade wraps the query in ( ... ): a ')' closing it early would leave a part
        # of the query outside the watermark's WHERE (exported again every time).
        raise ValueError("the query's parentheses are unbalanced (outside strings and comments)")
    return query


def _without_comments(query: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", query, flags=re.DOTALL)
    return re.sub(r"(--|#)[^\n]*", " ", text)


def _scrubbed(query: str) -> str:
    """``query`` with every literal, quoted name and comment blanked (``query_tables``
    has accepted it: every literal and comment is closed)."""
    return _LEXEMES.sub(" ", query)


def _balanced(query: str) -> bool:
    depth = 0
    for character in _scrubbed(query):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth < 0:
            return False
    return depth == 0


def _statement_count(query: str) -> int:
    """Statements ``query`` holds, ``;`` inside literals and comments not counted
    (``query_tables`` has accepted it: every literal and comment is closed)."""
    return 1 + _scrubbed(query).count(";")


# ---------------------------------------------------------------- SQL and parameters


def max_watermark_statement(relation: str, column: str) -> str:
    """The highest watermark of the source (NULL when it has no rows)."""
    _checked_column(column)
    return f"SELECT MAX(`{column}`) AS high FROM {relation} AS source"  # noqa: S608 - checked


def export_statement(relation: str, column: str, uri_prefix: str, *, incremental: bool) -> str:
    """``EXPORT DATA`` of the rows with ``@low < column <= @high`` (without ``@low`` for a
    first extraction) as Parquet shards ``<uri_prefix>part-<12 digits>.parquet``.

    ``uri_prefix`` is built by the system (bucket and checked names) and still checked
    here: an option's value must be a literal in BigQuery, so it is the one value written
    into the text."""
    _checked_column(column)
    segments = uri_prefix[5:].split("/")
    if not _EXPORT_URI.fullmatch(uri_prefix) or {"", ".", ".."} & set(segments[:-1]):
        raise ValueError(f"not an export destination prefix: {uri_prefix[:200]!r}")
    low = f"`{column}` > @low AND " if incremental else ""
    options = f"uri='{uri_prefix}part-*.parquet', format='PARQUET', overwrite=true"
    rows = f"SELECT * FROM {relation} AS source WHERE {low}`{column}` <= @high"  # noqa: S608
    return f"EXPORT DATA OPTIONS({options}) AS {rows}"


def _checked_column(column: str) -> None:
    if not _COLUMN.fullmatch(column):
        raise ValueError(f"not a column name: {column[:80]!r}")


def encode_watermark(kind: WatermarkType, value: WatermarkValue) -> str | int:
    """A watermark as JSON: INT64 as a number, the others as ISO 8601 text."""
    if kind == "INT64":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"an INT64 watermark must be an integer, not {value!r}")
        return value
    if kind == "DATE":
        if isinstance(value, datetime) or not isinstance(value, date):
            raise ValueError(f"a DATE watermark must be a date, not {value!r}")
        return value.isoformat()
    if not isinstance(value, datetime):
        raise ValueError(f"a {kind} watermark must be a date and time, not {value!r}")
    if kind == "TIMESTAMP" and value.tzinfo is None:
        raise ValueError(f"a TIMESTAMP watermark must carry its time zone: {value!r}")
    return value.isoformat()


def decode_watermark(kind: WatermarkType, value: str | int) -> WatermarkValue:
    """``encode_watermark``'s inverse; ValueError when ``value`` is not of ``kind``."""
    if kind == "INT64":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"an INT64 watermark must be an integer, not {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"a {kind} watermark must be ISO 8601 text, not {value!r}")
    if kind == "DATE":
        return date.fromisoformat(value)
    parsed = datetime.fromisoformat(value)
    if (kind == "TIMESTAMP") != (parsed.tzinfo is not None):
        raise ValueError(f"a {kind} watermark {'needs' if kind == 'TIMESTAMP' else 'has no'} zone")
    return parsed
