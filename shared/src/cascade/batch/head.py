"""The head of a hybrid dataset: its most requested keys, read from the request log.

Hybrid serving precomputes the head and lets the model answer the tail. A hybrid
dataset's ``serving.head: {keys: N, window_days: D}`` (``cascade.core.serving_config``)
makes its batches score only the source rows whose key is one of the ``N`` keys
requested most over the last ``D`` days of the request log
(``cascade.serving.request_log``: ``<project>.<serving-logs dataset>.request_response_logging``,
the rows of the model server's ``endpoint``, each instance's key under the model's key
input). Ties are broken by the key (BigQuery's string order, which is code point order),
so the same log gives the same head.

- Locally (``cascade.batch.task``) the head is read into a set (``read_head``) and the
  source is wrapped in a ``HeadSource`` that skips (and counts) the rows outside it; its
  identity carries a digest of the sorted keys, so a different head is a different batch.
- On Vertex AI, which scores a whole table, one BigQuery query job first materialises
  the head's rows of the source table into the batch's own table
  ``<project>.<predictions dataset>.<dataset>_head_<batch id>`` (``materialise_head``),
  and the job scores that table. Names come from checked ids only and values are query
  parameters.

An empty head — no log table yet, or no keyed request of the endpoint in the window (a
new hybrid dataset has no traffic) — means the batch scores the whole source: everything
is the safe start, and the next batch after traffic arrives scores the head.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import google.cloud.bigquery as bigquery
from google.api_core import exceptions as gexc

from cascade.batch.tables import table_prefix
from cascade.core.serving_config import HeadConfig
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.core.warehouse_names import table_id
from cascade.serving.request_log import REQUEST_LOG_TABLE, key_counts_query
from cascade.serving.state import read_serving_state

if TYPE_CHECKING:
    from cascade.batch.sources import InstanceSource, SourceRow

__all__ = [
    "HEAD_TABLE_SUFFIX",
    "SERVING_LOGS_WAREHOUSE",
    "Head",
    "HeadSource",
    "MaterialisedHead",
    "check_column_name",
    "head_table_id",
    "log_endpoint",
    "materialise_head",
    "materialise_head_query",
    "read_head",
    "request_log_table",
    "top_keys_query",
]

SERVING_LOGS_WAREHOUSE = "serving-logs"
"""The topology's warehouse dataset of the request log (infra/topology.yaml)."""
HEAD_TABLE_SUFFIX = "_head"
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
"""BigQuery's column-name rule: letters, digits and underscores, not starting with a
digit, at most 300 characters (flexible column names are not accepted here)."""


def request_log_table(settings: Settings) -> str:
    """The request log: ``<project>.<serving-logs dataset>.request_response_logging``."""
    return table_id(
        settings.project, settings.warehouse_dataset(SERVING_LOGS_WAREHOUSE), REQUEST_LOG_TABLE
    )


def log_endpoint(artifacts: ArtifactStore, dataset: str) -> str:
    """The endpoint the log's rows of ``dataset`` carry: ``serving.json``'s endpoint (the
    Vertex AI endpoint's resource name), else the dataset (the local model server's)."""
    found = read_serving_state(artifacts, dataset)
    return found[0].endpoint if found is not None and found[0].endpoint else dataset


def check_column_name(name: str) -> str:
    """``name`` if it is a plain BigQuery column name (it is written into SQL)."""
    if not _COLUMN.fullmatch(name):
        raise ValueError(
            f"not a BigQuery column name: {name[:120]!r} (letters, digits and _, not "
            "starting with a digit, at most 300 characters)"
        )
    return name


def _checked_table(name: str) -> str:
    parts = name.split(".")
    if len(parts) != 3:
        raise ValueError(f"not a project.dataset.table name: {name[:120]!r}")
    return table_id(*parts)


def head_table_id(project: str, predictions_dataset: str, dataset: str, batch_id: str) -> str:
    """Where one Vertex AI batch's head rows are materialised:
    ``<dataset>_head_<batch id>`` in the predictions dataset (``tables.table_prefix``),
    one table per batch, so a later batch never replaces the rows a running job scores."""
    if not re.fullmatch(r"[0-9a-f]{12,64}", batch_id):
        raise ValueError(f"not a batch id: {batch_id[:80]!r}")
    name = f"{table_prefix(dataset)}{HEAD_TABLE_SUFFIX}_{batch_id[:16]}"
    return table_id(project, predictions_dataset, name)


def top_keys_query(log_table: str, key_field: str) -> str:
    """The SQL of the head: the ``@keys`` keys of ``@endpoint`` requested most in
    [``@start``, ``@end``), most requested first, ties by key; null and empty keys are
    no key."""
    counts = key_counts_query(log_table, key_field).replace("\n", "\n  ")
    return (
        f"SELECT key FROM (\n  {counts}\n) AS counted\n"  # noqa: S608 - checked names
        "WHERE key IS NOT NULL AND key != ''\n"
        "ORDER BY requests DESC, key\n"
        "LIMIT @keys"
    )


def _parameters(
    config: HeadConfig, endpoint: str, now: datetime, *, keys: int | None = None
) -> tuple[list[bigquery.ScalarQueryParameter], datetime, datetime]:
    end = now.astimezone(UTC)
    start = end - timedelta(days=config.window_days)
    parameters = [
        bigquery.ScalarQueryParameter("endpoint", "STRING", endpoint),
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
        bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
        bigquery.ScalarQueryParameter("keys", "INT64", config.keys if keys is None else keys),
    ]
    return parameters, start, end


@dataclass(frozen=True)
class Head:
    """The keys a batch scores: ``keys`` most requested first (at most ``config.keys``).
    Empty when the log has no table or no keyed request in the window (``why_empty``):
    then the batch scores the whole source."""

    keys: tuple[str, ...]
    config: HeadConfig
    endpoint: str
    key_field: str
    log_table: str
    start: datetime
    end: datetime
    why_empty: str = ""

    @property
    def empty(self) -> bool:
        return not self.keys

    @property
    def digest(self) -> str:
        """SHA-256 of the sorted keys: equal heads, equal digests, whatever the ranks."""
        text = json.dumps(sorted(self.keys), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        window = f"the last {self.config.window_days} day(s) of {self.log_table}"
        if self.empty:
            return (
                f"empty head ({self.why_empty}): the whole source is scored; the top "
                f"{self.config.keys} key(s) of endpoint {self.endpoint!r} over {window} "
                "are scored once there is traffic"
            )
        return (
            f"head of {len(self.keys)} key(s) (top {self.config.keys} of endpoint "
            f"{self.endpoint!r} over {window}, digest {self.digest[:16]})"
        )


def read_head(
    client: bigquery.Client,
    log_table: str,
    *,
    config: HeadConfig,
    endpoint: str,
    key_field: str,
    now: datetime,
) -> Head:
    """The top ``config.keys`` keys of ``endpoint`` over ``config.window_days`` days before
    ``now``, by one query of the log. A missing log table is an empty head (no traffic
    logged yet); any other BigQuery error is raised (a batch must not score everything
    because the log was unreadable)."""
    parameters, start, end = _parameters(config, endpoint, now)
    query = top_keys_query(log_table, key_field)
    empty = Head(
        keys=(),
        config=config,
        endpoint=endpoint,
        key_field=key_field,
        log_table=log_table,
        start=start,
        end=end,
    )
    try:
        job = client.query(query, job_config=bigquery.QueryJobConfig(query_parameters=parameters))
        keys = tuple(str(row["key"]) for row in job.result())
    except gexc.NotFound:
        return replace(empty, why_empty=f"no request log: {log_table} does not exist")
    if not keys:
        return replace(empty, why_empty=f"no request with a {key_field!r} key in the window")
    return replace(empty, keys=keys)


def _key_text(value: Any) -> str | None:
    """A row's key as the log and the cloud's ``CAST(key AS STRING)`` write it."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class HeadSource:
    """``source`` with only the rows whose ``key`` column is in ``head`` (a non-empty
    head). Rows outside it are skipped, not errors, and counted (``outside``); a row that
    could not be read (``problem``) goes on, to be recorded as the error it is."""

    def __init__(self, source: InstanceSource, head: Head, key: str) -> None:
        if head.empty:
            raise ValueError("an empty head filters nothing: score the source itself")
        self._source = source
        self._keys = frozenset(head.keys)
        self._key = key
        self.head = head
        self.outside = 0
        self.inside = 0

    @property
    def identity(self) -> str:
        """The source's identity and the head's: a different head is a different batch."""
        return f"{self._source.identity}|head:{len(self._keys)}:{self.head.digest}"

    @property
    def uri(self) -> str:
        return self._source.uri

    def rows(self) -> Iterator[SourceRow]:
        self.outside = self.inside = 0
        for row in self._source.rows():
            if row.problem is None and _key_text(row.values.get(self._key)) not in self._keys:
                self.outside += 1
                continue
            self.inside += 1
            yield row


def materialise_head_query(
    *, source_table: str, head_table: str, log_table: str, key_column: str
) -> str:
    """``CREATE OR REPLACE TABLE head AS`` the rows of ``source_table`` whose
    ``key_column`` (as text) is one of the head's keys (``top_keys_query``'s
    parameters). Every name is checked; no value is written into the SQL."""
    source = _checked_table(source_table)
    head = _checked_table(head_table)
    column = check_column_name(key_column)
    keys = top_keys_query(_checked_table(log_table), key_column).replace("\n", "\n  ")
    return (
        f"CREATE OR REPLACE TABLE `{head}` AS\n"
        f"SELECT s.* FROM `{source}` AS s\n"
        f"JOIN (\n  {keys}\n) AS h\n"
        f"ON CAST(s.`{column}` AS STRING) = h.key"
    )


@dataclass(frozen=True)
class MaterialisedHead:
    """What a Vertex AI batch scores: ``head`` (the materialised rows), ``source`` (an
    empty head: the whole source table) or ``nothing`` (the head's keys match no row)."""

    score: Literal["head", "source", "nothing"]
    table: str | None
    """The table to score (None for ``nothing``)."""
    rows: int | None
    reason: str


def materialise_head(
    client: bigquery.Client,
    *,
    source_table: str,
    head_table: str,
    log_table: str,
    key_column: str,
    config: HeadConfig,
    endpoint: str,
    now: datetime,
) -> MaterialisedHead:
    """Materialise the head's rows of ``source_table`` into ``head_table`` with one query
    job. A missing log table scores the whole source; so does an empty result when the
    log holds no keyed request in the window (a second, small query tells that apart from
    a head whose keys match no source row: then there is nothing to score)."""
    query = materialise_head_query(
        source_table=source_table, head_table=head_table, log_table=log_table, key_column=key_column
    )
    try:
        client.get_table(log_table)
    except gexc.NotFound:
        return MaterialisedHead(
            "source", source_table, None, f"no request log: {log_table} does not exist"
        )
    parameters, _, _ = _parameters(config, endpoint, now)
    client.query(query, job_config=bigquery.QueryJobConfig(query_parameters=parameters)).result()
    rows = client.get_table(head_table).num_rows or 0
    if rows:
        return MaterialisedHead("head", head_table, rows, f"{rows} row(s) of the head")
    probe, _, _ = _parameters(config, endpoint, now, keys=1)
    job = client.query(
        top_keys_query(log_table, key_column),
        job_config=bigquery.QueryJobConfig(query_parameters=probe),
    )
    if not list(job.result()):
        return MaterialisedHead(
            "source",
            source_table,
            None,
            f"no request with a {key_column!r} key of endpoint {endpoint!r} in the last "
            f"{config.window_days} day(s)",
        )
    return MaterialisedHead(
        "nothing", None, 0, f"none of the head's keys is a {key_column!r} of {source_table}"
    )
