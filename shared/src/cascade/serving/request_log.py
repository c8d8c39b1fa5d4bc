"""The model server's request log: one BigQuery row per predict request, as Vertex AI's.

In the cloud a Vertex AI endpoint's request-response logging
(``Endpoint.predict_request_response_logging_config``) writes a sample of the online
predictions to a BigQuery table, by default ``request_response_logging`` in the dataset
``logging_<endpoint-display-name>_<endpoint-id>``. Its columns (schema "v1", the one
custom-trained models get; "Online prediction logging",
https://cloud.google.com/vertex-ai/docs/predictions/online-prediction-logging, and
``PredictRequestResponseLoggingConfig``, Vertex AI API v1):

===================  =========  ========  ==================================================
column               type       mode      holds
===================  =========  ========  ==================================================
endpoint             STRING     NULLABLE  the endpoint's resource name
deployed_model_id    STRING     NULLABLE  the deployed model that answered
logging_time         TIMESTAMP  NULLABLE  when the row was logged (about the response time)
request_id           NUMERIC    NULLABLE  an integer id generated per request
request_payload      STRING     REPEATED  one JSON instance per element
response_payload     STRING     REPEATED  one JSON prediction per element
===================  =========  ========  ==================================================

(Schema "v2", for generative models, adds ``model``, ``model_version``, ``api_method``,
``full_request``, ``full_response``, ``metadata`` and ``otel_log``; custom models do not
fill them.) Readers take the keys out of the payload with
``UNNEST(request_payload)`` and ``JSON_VALUE(instance, '$.key')``.

The local cloud's model server writes the same rows, through the real
``google-cloud-bigquery`` client, to the local BigQuery (docs/fidelity.md, "strict
twin"): ``RequestLog.record`` is called once per predict request; it only appends to a
bounded buffer, and a background thread sends the rows in batches with
``insert_rows_json``. A prediction is never blocked or failed by its log: a full buffer
drops the new rows (counted), a failed batch is retried a bounded number of times, then
dropped and logged. ``read_key_counts`` is the reader: requests per key over a window,
by SQL against that table, in the cloud and locally alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.cloud import bigquery

__all__ = [
    "REQUEST_LOG_SCHEMA",
    "REQUEST_LOG_TABLE",
    "KeyCounts",
    "RequestLog",
    "ensure_request_log_table",
    "key_counts_query",
    "numeric_request_id",
    "read_key_counts",
    "request_log_row",
]

_log = logging.getLogger("cascade.serving.request_log")

REQUEST_LOG_TABLE = "request_response_logging"
"""The table name Vertex AI gives the log when none is configured."""

REQUEST_LOG_SCHEMA = (
    bigquery.SchemaField("endpoint", "STRING"),
    bigquery.SchemaField("deployed_model_id", "STRING"),
    bigquery.SchemaField("logging_time", "TIMESTAMP"),
    bigquery.SchemaField("request_id", "NUMERIC"),
    bigquery.SchemaField("request_payload", "STRING", mode="REPEATED"),
    bigquery.SchemaField("response_payload", "STRING", mode="REPEATED"),
)

_KEY_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_TABLE_ID = re.compile(r"^[A-Za-z0-9_.:-]+\.[A-Za-z0-9_]+\.[A-Za-z0-9_$-]+$")
_EXACT = 2**53


def numeric_request_id(request_id: int | str) -> int:
    """A request id as the log's NUMERIC column holds it: an integer id below 2**53 as
    is, any other id (a UUID, a header value) as a stable 52-bit integer derived from it.
    Below 2**53 a JSON number is exact whichever way a reader parses it."""
    if isinstance(request_id, bool):
        request_id = str(request_id)
    if isinstance(request_id, int) and 0 <= request_id < _EXACT:
        return request_id
    text = str(request_id)
    if text.isascii() and text.isdigit() and len(text) <= 15 and int(text) < _EXACT:
        return int(text)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 12


def request_log_row(
    *,
    endpoint: str,
    deployed_model_id: str,
    request_id: int | str,
    keys: Sequence[Any],
    precomputed: Sequence[bool] | None = None,
    key_field: str = "key",
    logged_at: datetime | None = None,
) -> dict[str, Any]:
    """One log row, as ``insert_rows_json`` takes it: each instance's key in
    ``request_payload`` (``{"<key_field>": key}``), and in ``response_payload`` the key
    with whether the answer was precomputed (``{"<key_field>": key, "precomputed": b}``)."""
    if precomputed is not None and len(precomputed) != len(keys):
        raise ValueError(f"{len(keys)} keys but {len(precomputed)} precomputed flags")
    flags = precomputed if precomputed is not None else [False] * len(keys)
    moment = (logged_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "endpoint": endpoint,
        "deployed_model_id": deployed_model_id,
        "logging_time": moment.isoformat(),
        "request_id": numeric_request_id(request_id),
        "request_payload": [json.dumps({key_field: _jsonable(key)}) for key in keys],
        "response_payload": [
            json.dumps({key_field: _jsonable(key), "precomputed": bool(flag)})
            for key, flag in zip(keys, flags, strict=True)
        ],
    }


def _jsonable(key: Any) -> Any:
    if key is None or isinstance(key, str | int | float | bool):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    item = getattr(key, "item", None)  # numpy scalars
    return item() if callable(item) else str(key)


@dataclass
class _Counters:
    recorded: int = 0
    written: int = 0
    dropped: int = 0
    """Rows dropped because the buffer was full."""
    failed: int = 0
    """Rows given up on after their batch failed every attempt, or that BigQuery refused."""


class RequestLog:
    """A buffered writer of request-log rows to one BigQuery table.

    ``record`` is the one call a predict request makes; it never raises and never waits
    on the network. A daemon thread (started on the first record, and again in a forked
    worker) sends batches of ``batch_rows`` rows at most every ``flush_interval_s``, or as
    soon as a batch is full. A batch that fails is retried ``max_attempts`` times in all,
    ``retry_backoff_s`` apart (doubling), then dropped with an error logged; the buffer
    holds ``max_buffered`` rows at most, rows beyond it are dropped and counted.
    """

    def __init__(
        self,
        client: bigquery.Client,
        table: str,
        *,
        key_field: str = "key",
        batch_rows: int = 500,  # BigQuery's recommended insertAll batch
        max_buffered: int = 50_000,
        flush_interval_s: float = 1.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not _TABLE_ID.fullmatch(table):
            raise ValueError(f"request log table {table!r} is not project.dataset.table")
        if not _KEY_FIELD.fullmatch(key_field):
            raise ValueError(f"key field {key_field!r} is not a plain field name")
        if not 1 <= batch_rows <= 500 or max_buffered < 1 or max_attempts < 1:
            raise ValueError("batch_rows must be 1..500; max_buffered, max_attempts >= 1")
        self._client = client
        self.table = table
        self.key_field = key_field
        self._batch_rows = batch_rows
        self._max_buffered = max_buffered
        self._interval = flush_interval_s
        self._attempts = max_attempts
        self._backoff = retry_backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._buffer: deque[tuple[str, dict[str, Any]]] = deque()
        self._in_flight = 0
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.counters = _Counters()

    # -- the request path ----------------------------------------------------------------

    def record(
        self,
        *,
        endpoint: str,
        deployed_model_id: str,
        request_id: int | str,
        keys: Sequence[Any],
        precomputed: Sequence[bool] | None = None,
        key_field: str | None = None,
    ) -> None:
        """Log one predict request: its endpoint, the deployed model (version) that
        answered, its id, each instance's key (under ``key_field``: the model's key
        input, as the instance carried it; default the log's) and whether each answer
        was precomputed. Never raises; never blocks on I/O."""
        try:
            if key_field is not None and not _KEY_FIELD.fullmatch(key_field):
                raise ValueError(f"key field {key_field!r} is not a plain field name")
            row = request_log_row(
                endpoint=endpoint,
                deployed_model_id=deployed_model_id,
                request_id=request_id,
                keys=keys,
                precomputed=precomputed,
                key_field=key_field or self.key_field,
                logged_at=self._clock(),
            )
            with self._lock:
                if self._closed.is_set():
                    self.counters.dropped += 1
                    return
                if len(self._buffer) >= self._max_buffered:
                    self.counters.dropped += 1
                    if self.counters.dropped in (1, 10, 100) or self.counters.dropped % 10_000 == 0:
                        _log.warning(
                            "request log buffer full (%d rows): %d rows dropped so far",
                            self._max_buffered,
                            self.counters.dropped,
                        )
                    return
                self._buffer.append((uuid.uuid4().hex, row))
                self.counters.recorded += 1
                full = len(self._buffer) >= self._batch_rows
                self._ensure_thread()
            if full:
                self._wake.set()
        except Exception:  # noqa: BLE001 - a log never fails a prediction
            _log.exception("request log: could not record request %r", request_id)

    # -- flushing --------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wake the sender and wait until every row recorded so far was sent (or given
        up on); False if that took longer than ``timeout_s``."""
        with self._lock:
            if self._buffer or self._in_flight:
                self._ensure_thread()
            self._wake.set()
            return self._idle.wait_for(
                lambda: not self._buffer and not self._in_flight, timeout=timeout_s
            )

    def close(self, timeout_s: float = 10.0) -> bool:
        """Send what is buffered, then stop the sender; later records are dropped."""
        sent = self.flush(timeout_s)
        self._closed.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout_s)
        return sent

    def _ensure_thread(self) -> None:
        """Start the sender (under the lock): once per process, so a forked worker that
        inherited the object without its thread gets its own."""
        pid = os.getpid()
        if self._thread is not None and self._pid == pid and self._thread.is_alive():
            return
        self._pid = pid
        self._thread = threading.Thread(target=self._run, name="cascade-request-log", daemon=True)
        self._thread.start()

    def _take(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            count = min(self._batch_rows, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            self._in_flight = len(batch)
            return batch

    def _done(self) -> None:
        with self._lock:
            self._in_flight = 0
            if not self._buffer:
                self._idle.notify_all()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            while True:
                batch = self._take()
                if not batch:
                    self._done()
                    break
                try:
                    self._send(batch)
                except Exception:  # noqa: BLE001 - the sender must outlive any batch
                    _log.exception("request log: batch of %d rows lost", len(batch))
                    self.counters.failed += len(batch)
                self._done()
            if self._closed.is_set():
                return

    def _send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        ids = [row_id for row_id, _ in batch]
        rows = [row for _, row in batch]
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                errors = self._client.insert_rows_json(self.table, rows, row_ids=ids)
            except Exception as error:  # noqa: BLE001 - retried, then given up on
                if attempt == self._attempts:
                    _log.error(
                        "request log: %d rows to %s dropped after %d attempts: %s",
                        len(rows),
                        self.table,
                        attempt,
                        error,
                    )
                    self.counters.failed += len(rows)
                    return
                _log.warning(
                    "request log: insert into %s failed (attempt %d/%d): %s",
                    self.table,
                    attempt,
                    self._attempts,
                    error,
                )
                if self._closed.wait(delay):  # closing: one last attempt, no more waiting
                    delay = 0.0
                delay *= 2
                continue
            refused = len(errors or [])
            if refused:
                _log.error("request log: BigQuery refused %d rows: %s", refused, errors[:3])
            self.counters.failed += refused
            self.counters.written += len(rows) - refused
            return


def ensure_request_log_table(
    client: bigquery.Client, table: str, *, location: str | None = None
) -> None:
    """Create the log's dataset and table with Vertex AI's schema if they are missing
    (the local cloud; in the cloud Terraform or Vertex AI makes them)."""
    project_dataset, _, _ = table.rpartition(".")
    dataset = bigquery.Dataset(project_dataset)
    if location:
        dataset.location = location
    client.create_dataset(dataset, exists_ok=True)
    client.create_table(bigquery.Table(table, schema=list(REQUEST_LOG_SCHEMA)), exists_ok=True)


@dataclass(frozen=True)
class KeyCounts:
    """Requests per key over a window of the log."""

    counts: dict[str, int]
    unkeyed: int
    """Instances logged without the key field (or with a null key)."""
    start: datetime
    end: datetime

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    @property
    def window_s(self) -> float:
        return max((self.end - self.start).total_seconds(), 0.0)


def key_counts_query(table: str, key_field: str = "key") -> str:
    """The SQL that counts the requests per key (``@endpoint``, ``@start``, ``@end``)."""
    if not _TABLE_ID.fullmatch(table):
        raise ValueError(f"request log table {table!r} is not project.dataset.table")
    if not _KEY_FIELD.fullmatch(key_field):
        raise ValueError(f"key field {key_field!r} is not a plain field name")
    return (
        f"SELECT JSON_VALUE(instance, '$.{key_field}') AS key, COUNT(*) AS requests\n"
        f"FROM `{table}`, UNNEST(request_payload) AS instance\n"
        "WHERE endpoint = @endpoint AND logging_time >= @start AND logging_time < @end\n"
        "GROUP BY key"
    )


def read_key_counts(
    client: bigquery.Client,
    table: str,
    *,
    endpoint: str,
    start: datetime,
    end: datetime,
    key_field: str = "key",
    deadline_s: float | None = None,
) -> KeyCounts:
    """Requests per key of ``endpoint`` in [start, end), read from the log table.

    ``deadline_s`` bounds the retries of each call and the wait for the query, for
    callers that only want the counts if BigQuery answers soon (the run report builds
    its serving plan best-effort); None keeps the client's defaults, which retry an
    unreachable BigQuery for up to 10 minutes. Raises
    ``google.api_core.exceptions.NotFound`` when the table does not exist, and
    ``RetryError`` (or a timeout) once ``deadline_s`` has passed.
    """
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("endpoint", "STRING", endpoint),
            bigquery.ScalarQueryParameter("start", "TIMESTAMP", start.astimezone(UTC)),
            bigquery.ScalarQueryParameter("end", "TIMESTAMP", end.astimezone(UTC)),
        ]
    )
    query = key_counts_query(table, key_field)
    if deadline_s is None:
        rows = client.query(query, job_config=config).result()
    else:
        # job_retry=None: the client's outer retry of a failed query insert has its own
        # 10-minute deadline, which would outlast ``deadline_s``.
        retry = bigquery.DEFAULT_RETRY.with_timeout(deadline_s)
        job = client.query(
            query, job_config=config, retry=retry, timeout=deadline_s, job_retry=None
        )
        rows = job.result(retry=retry, timeout=deadline_s, job_retry=None)
    counts: dict[str, int] = {}
    unkeyed = 0
    for row in rows:
        key, requests = row["key"], int(row["requests"])
        if key is None:
            unkeyed += requests
        else:
            counts[str(key)] = counts.get(str(key), 0) + requests
    return KeyCounts(counts=counts, unkeyed=unkeyed, start=start, end=end)
