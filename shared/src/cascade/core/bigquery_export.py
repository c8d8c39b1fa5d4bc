"""BigQuery's side of an extraction: the source's high watermark, and ``EXPORT DATA``.

``BigQueryExporter`` runs two query jobs with the real client: ``SELECT MAX(column)``
and ``EXPORT DATA OPTIONS(uri='gs://.../part-*.parquet', format='PARQUET',
overwrite=true) AS SELECT * FROM <source> WHERE column > @low AND column <= @high``,
the watermarks as typed query parameters (``cascade.core.bigquery_source`` builds the
text). It waits for each job to be DONE.

BigQuery's refusals become Cascade's errors: a query BigQuery rejects (a column that
does not exist, a type that does not compare), a table or dataset it cannot find, or a
permission the function lacks is permanent (``InvalidConfigError`` naming the
dataset's ``bigquery_source``: retrying cannot help, a person must fix the config or
the grants); a 5xx, a timeout or a lost connection is transient.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

import google.cloud.bigquery as bigquery
from google.api_core import exceptions as gexc

from cascade.core.bigquery_source import (
    BigQuerySource,
    WarehouseNamer,
    WatermarkType,
    WatermarkValue,
    encode_watermark,
    export_statement,
    max_watermark_statement,
)
from cascade.core.errors import InvalidConfigError, transient_errors

__all__ = ["BigQueryExporter", "SourceExporter", "watermark_parameters"]

_PERMANENT = (gexc.BadRequest, gexc.NotFound, gexc.Forbidden)


class SourceExporter(Protocol):
    """What an extraction asks of BigQuery (a fake in unit tests)."""

    def max_watermark(self, dataset: str, source: BigQuerySource) -> WatermarkValue | None:
        """The source's highest watermark; None when it has no row with one."""
        ...

    def export(
        self,
        dataset: str,
        source: BigQuerySource,
        low: WatermarkValue | None,
        high: WatermarkValue,
        uri_prefix: str,
    ) -> None:
        """Export the rows ``low < watermark <= high`` under ``uri_prefix`` (done when
        this returns)."""
        ...


def watermark_parameters(
    kind: WatermarkType, low: WatermarkValue | None, high: WatermarkValue
) -> list[bigquery.ScalarQueryParameter]:
    """``@low`` (when there is one) and ``@high`` as typed query parameters."""
    parameters = [bigquery.ScalarQueryParameter("high", kind, high)]
    if low is not None:
        parameters.insert(0, bigquery.ScalarQueryParameter("low", kind, low))
    return parameters


class BigQueryExporter:
    """``SourceExporter`` on a ``google-cloud-bigquery`` client."""

    def __init__(
        self,
        client: bigquery.Client,
        warehouse_dataset: WarehouseNamer,
        *,
        timeout_s: float = 480.0,
    ) -> None:
        self._client = client
        self._warehouse_dataset = warehouse_dataset
        self._timeout_s = timeout_s

    def _relation(self, source: BigQuerySource) -> str:
        return source.relation(str(self._client.project), self._warehouse_dataset)

    def max_watermark(self, dataset: str, source: BigQuerySource) -> WatermarkValue | None:
        sql = max_watermark_statement(self._relation(source), source.watermark.column)
        rows = self._run(dataset, sql, [], "reading the source's high watermark")
        value = rows[0][0] if rows else None
        if value is None:
            return None
        return _typed(dataset, source, value)

    def export(
        self,
        dataset: str,
        source: BigQuerySource,
        low: WatermarkValue | None,
        high: WatermarkValue,
        uri_prefix: str,
    ) -> None:
        sql = export_statement(
            self._relation(source), source.watermark.column, uri_prefix, incremental=low is not None
        )
        parameters = watermark_parameters(source.watermark.type, low, high)
        self._run(dataset, sql, parameters, f"exporting to {uri_prefix}")

    def _run(
        self,
        dataset: str,
        sql: str,
        parameters: list[bigquery.ScalarQueryParameter],
        action: str,
    ) -> list[bigquery.Row]:
        config = bigquery.QueryJobConfig(query_parameters=parameters, use_legacy_sql=False)
        try:
            with transient_errors(f"dataset {dataset}: {action}"):
                job = self._client.query(sql, job_config=config)
                return list(job.result(timeout=self._timeout_s))
        except _PERMANENT as error:
            raise InvalidConfigError(
                f"dataset {dataset}: bigquery_source: BigQuery refused {action}: {_message(error)}"
            ) from error


def _message(error: gexc.GoogleAPICallError) -> str:
    return str(getattr(error, "message", "") or error)[:500]


def _typed(dataset: str, source: BigQuerySource, value: object) -> WatermarkValue:
    """``value`` when it is of the watermark's declared type (BigQuery gives TIMESTAMP
    as an aware datetime, DATETIME naive, DATE a date, INT64 an int)."""
    kind = source.watermark.type
    if isinstance(value, bool) or not isinstance(value, datetime | date | int):
        raise InvalidConfigError(_mismatch(dataset, source, value))
    if kind == "DATETIME" and isinstance(value, datetime) and value.tzinfo is not None:
        raise InvalidConfigError(_mismatch(dataset, source, value))
    try:
        encode_watermark(kind, value)
    except ValueError:
        raise InvalidConfigError(_mismatch(dataset, source, value)) from None
    return value


def _mismatch(dataset: str, source: BigQuerySource, value: object) -> str:
    return (
        f"dataset {dataset}: bigquery_source.watermark: column {source.watermark.column!r} "
        f"is not of type {source.watermark.type} (its maximum is {value!r:.80})"
    )
