"""``EXPORT DATA`` statements, read for the local BigQuery's IAM guard.

BigQuery runs ``EXPORT DATA OPTIONS(uri='gs://...', ...) AS <query>`` as a query job
under the caller's identity: it needs read on every table the query reads and, on the
destination bucket, ``storage.objects.create`` (and ``storage.objects.delete`` with
``overwrite=true``, which replaces existing shards). The guard
(``cascade.core.bigquery_grants``) checks both; this module splits the statement into
its destination and its query, conservatively: options must be ``key = literal`` pairs
(quoted text without escapes, ``true`` or ``false``), the statement must start with
``EXPORT DATA`` (no comment before it, no ``WITH CONNECTION``), and the query must start
with SELECT, WITH or a parenthesis; the URI's path has no empty, ``.`` or ``..`` segment
(the local BigQuery writes ``gs://bucket/path`` to ``<its folder>/bucket/path``), and it
holds exactly one ``*`` (BigQuery's "you must use a single wildcard URI" for EXPORT DATA;
the local BigQuery also writes a single file). Anything else is not understood, and
refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ExportData", "is_export_data", "parse_export_data"]

_START = re.compile(r"^\s*EXPORT\s+DATA\b", re.IGNORECASE)
_HEAD = re.compile(r"^\s*EXPORT\s+DATA\s+OPTIONS\s*\(", re.IGNORECASE)
_OPTION = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('[^'\\\n]*'|\"[^\"\\\n]*\"|true\b|false\b)\s*(,|\))",
    re.IGNORECASE,
)
_AS_QUERY = re.compile(r"\s*AS\s+(?=\(|SELECT\b|WITH\b)", re.IGNORECASE)
_URI = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,61}[a-z0-9])/[^\s'\"]+")


@dataclass(frozen=True)
class ExportData:
    """An EXPORT DATA statement's destination bucket, URI, overwrite and query."""

    bucket: str
    uri: str
    overwrite: bool
    query: str


def is_export_data(text: str) -> bool:
    """Whether ``text`` is (meant as) an EXPORT DATA statement."""
    return bool(_START.match(text))


def parse_export_data(text: str) -> ExportData | None:
    """The parts of ``text``; None when it is not an EXPORT DATA statement this module
    understands completely."""
    head = _HEAD.match(text)
    if head is None:
        return None
    options: dict[str, str] = {}
    at = head.end()
    while True:
        option = _OPTION.match(text, at)
        if option is None:
            return None
        key = option.group(1).lower()
        if key in options:
            return None
        options[key] = option.group(2)
        at = option.end()
        if option.group(3) == ")":
            break
    query_start = _AS_QUERY.match(text, at)
    uri = options.get("uri", "")
    found = _URI.fullmatch(uri[1:-1]) if uri[:1] in ("'", '"') else None
    if query_start is None or found is None:
        return None
    if {"", ".", ".."} & set(found.group(0).split("/")[3:]):
        return None  # the local BigQuery maps the URI to a path: no way out of its folder
    if found.group(0).count("*") != 1:
        return None  # BigQuery: EXPORT DATA takes a single wildcard URI only
    overwrite = options.get("overwrite", "false").lower()
    if overwrite not in ("true", "false"):
        return None
    return ExportData(
        bucket=found.group(1),
        uri=uri[1:-1],
        overwrite=overwrite == "true",
        query=text[query_start.end() :],
    )
