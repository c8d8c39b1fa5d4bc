"""Which tables a GoogleSQL query reads and writes, for the local BigQuery's IAM guard
(``cascade.core.bigquery_grants``): BigQuery checks every table a job touches, and the
local BigQuery checks none, so the guard must find them all or refuse the query.

This is not a SQL parser. It is a conservative scanner: whatever it cannot account for
is refused (``None``), so a query passes only when every table it could touch was found.
Cascade's own queries (batch scoring, collection, heads, the request log, the advisor)
are plain enough to pass; tests hold them to it.

1. Comments (``--``, ``#``, ``/* */``) become spaces and string literals become ``''``,
   so neither can hide a name nor fake one; raw strings (``r'...'``), an unterminated
   literal, comment or quoted name refuse the query.
2. The text is split into statements on ``;``; each must start with SELECT, WITH, a
   parenthesis, INSERT, MERGE, UPDATE, DELETE, TRUNCATE TABLE, DROP TABLE or CREATE
   [OR REPLACE] [TEMP] TABLE. Anything else (scripts, EXECUTE IMMEDIATE, CALL, views,
   schemas, functions, ALTER, EXPORT DATA, LOAD DATA, ...) is refused.
3. Read: a name after FROM, JOIN or MERGE's USING, after a comma in a FROM clause at any
   depth of parentheses, after CLONE / COPY / LIKE in CREATE TABLE, and any backquoted
   name with a dot anywhere. A name followed by ``(`` is a function (UNNEST, a table
   function), not a table. FROM, JOIN or a comma followed by a ``(`` that does not open
   a subquery (a parenthesised join) is refused, as is a backquoted name followed by
   ``.`` (``\\`a.b\\`.c`` names another table than it seems to).
4. Written: the target of INSERT, CREATE TABLE, MERGE, UPDATE, DELETE, TRUNCATE, DROP.
5. Every name must be ``dataset.table`` or ``project.dataset.table`` (``:`` taken as
   ``.``); a one-part name is a CTE of the query (``WITH x AS (...)``) or refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["QueryTables", "query_tables"]

Table = tuple[str, str, str]

_NAME = r"(`[^`]+`|[A-Za-z0-9_.:-]++)"
_NOT_CALLED = r"(?!\s*[\(\[])"
_TABLE_REFERENCE = re.compile(rf"\b(?:FROM|JOIN|USING)\s+{_NAME}{_NOT_CALLED}", re.IGNORECASE)
_WRITTEN_TABLE = re.compile(
    r"\b(?:INSERT\s+(?>INTO\s+)?"
    r"|CREATE\s+(?>OR\s+REPLACE\s+)?(?>TEMP(?:ORARY)?\s+)?TABLE\s+(?>IF\s+NOT\s+EXISTS\s+)?"
    r"|MERGE\s+(?>INTO\s+)?|UPDATE\s+|DELETE\s+(?>FROM\s+)?|TRUNCATE\s+TABLE\s+"
    r"|DROP\s+TABLE\s+(?>IF\s+EXISTS\s+)?)"
    rf"(?!(?:ROW|VALUES|SET|WHEN|SELECT)\b){_NAME}",
    re.IGNORECASE,
)
_COPIED_TABLE = re.compile(rf"\b(?:CLONE|COPY|LIKE)\s+{_NAME}{_NOT_CALLED}", re.IGNORECASE)
_FROM_CLAUSE = re.compile(
    r"\bFROM\b(.*?)(?=\b(?:WHERE|GROUP|ORDER|LIMIT|HAVING|QUALIFY|WINDOW|UNION|INTERSECT"
    r"|EXCEPT|SELECT)\b|$)",
    re.IGNORECASE | re.DOTALL,
)
_COMMA_REFERENCE = re.compile(rf",\s*{_NAME}{_NOT_CALLED}")
_QUOTED = re.compile(r"`[^`]+`")
_CTE_NAME = re.compile(r"(?:\bWITH|,)\s+`?([A-Za-z_][A-Za-z0-9_]*)`?\s+AS\s*\(", re.IGNORECASE)
_INNERMOST = re.compile(r"\(([^()]*)\)")
_STATEMENT = re.compile(
    r"^\s*(?:\(|SELECT\b|WITH\b|INSERT\b|MERGE\b|UPDATE\b|DELETE\b|TRUNCATE\s+TABLE\b"
    r"|DROP\s+TABLE\b|CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?TABLE\b)",
    re.IGNORECASE,
)
_CREATE = re.compile(r"^\s*CREATE\b", re.IGNORECASE)
_PAREN_NOT_SUBQUERY = re.compile(r"(?:\bFROM|\bJOIN|,)\s*\((?!\s*(?:SELECT|WITH)\b)", re.IGNORECASE)
_NO_TABLE_QUERY = re.compile(r"^\s*SELECT\b(?!.*\b(?:FROM|JOIN)\b)", re.IGNORECASE | re.DOTALL)
_RAW_PREFIX = re.compile(r"[rR][bB]?$|[bB][rR]$")


@dataclass(frozen=True)
class QueryTables:
    """The (project, dataset, table) a query reads and those it writes."""

    reads: tuple[Table, ...]
    writes: tuple[Table, ...]


def _closing_quote(sql: str, start: int, quote: str) -> int:
    """Where the literal opened by ``quote`` before ``start`` ends; -1 when it does not."""
    at = start
    while True:
        end = sql.find(quote, at)
        if end < 0:
            return -1
        slashes = 0
        while end - slashes - 1 >= start and sql[end - slashes - 1] == "\\":
            slashes += 1
        if slashes % 2 == 0:
            return end
        at = end + 1


def _scrub(sql: str) -> str | None:
    """``sql`` with comments as spaces and string literals as ``''``; None when a
    literal, comment or quoted name is not closed, or a literal is raw."""
    out: list[str] = []
    index = 0
    while index < len(sql):
        char = sql[index]
        if char == "`":
            end = sql.find("`", index + 1)
            if end < 0:
                return None
            out.append(sql[index : end + 1])
            index = end + 1
        elif char in "'\"":
            if _RAW_PREFIX.search(sql[max(0, index - 2) : index]):
                return None  # r'...': backslashes do not escape; not worth the risk
            quote = sql[index : index + 3] if sql[index : index + 3] in ("'''", '"""') else char
            end = _closing_quote(sql, index + len(quote), quote)
            if end < 0:
                return None
            out.append("''")
            index = end + len(quote)
        elif sql.startswith("--", index) or char == "#":
            end = sql.find("\n", index)
            out.append(" ")
            index = len(sql) if end < 0 else end
        elif sql.startswith("/*", index):
            end = sql.find("*/", index + 2)
            if end < 0:
                return None
            out.append(" ")
            index = end + 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _comma_names(sql: str) -> list[str]:
    """Names after a comma in a FROM clause, at every depth of parentheses (innermost
    groups are read, then replaced by ``[]``, until none is left)."""
    names: list[str] = []
    text = sql
    while True:
        group = _INNERMOST.search(text)
        segment = text if group is None else group.group(1)
        for clause in _FROM_CLAUSE.finditer(segment):
            names += [match.group(1) for match in _COMMA_REFERENCE.finditer(clause.group(1))]
        if group is None:
            return names
        text = text[: group.start()] + "[]" + text[group.end() :]


def _parts(raw: str, project: str) -> Table | None:
    parts = raw.strip("`").replace(":", ".").split(".")
    if len(parts) == 2:
        parts = [project, *parts]
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def _tables(raw_names: list[str], project: str, ctes: set[str]) -> list[Table] | None:
    found: list[Table] = []
    for raw in dict.fromkeys(raw_names):
        if raw.strip("`").lower() in ctes:
            continue
        parts = _parts(raw, project)
        if parts is None:
            return None
        found.append(parts)
    return found


def query_tables(text: str, project: str) -> QueryTables | None:
    """The tables ``text`` reads and writes, names completed with ``project``; None when
    the query is refused (something in it is not understood)."""
    sql = _scrub(text)
    if sql is None:
        return None
    statements = [statement for statement in sql.split(";") if statement.strip()]
    if not statements or not all(_STATEMENT.match(statement) for statement in statements):
        return None
    if _PAREN_NOT_SUBQUERY.search(sql) or re.search(r"`\s*\.", sql):
        return None
    ctes = {name.lower() for name in _CTE_NAME.findall(sql)}
    read_names = [match.group(1) for match in _TABLE_REFERENCE.finditer(sql)]
    read_names += _comma_names(sql)
    for statement in statements:
        if _CREATE.match(statement):
            read_names += [match.group(1) for match in _COPIED_TABLE.finditer(statement)]
    read_names += [name for name in _QUOTED.findall(sql) if "." in name]
    reads = _tables(read_names, project, ctes)
    writes = _tables([match.group(1) for match in _WRITTEN_TABLE.finditer(sql)], project, set())
    if reads is None or writes is None:
        return None
    if not reads and not writes and not all(_NO_TABLE_QUERY.match(s) for s in statements):
        return None
    return QueryTables(tuple(reads), tuple(writes))
