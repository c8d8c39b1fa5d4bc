"""The request log (cascade.serving.request_log): the writer's rows, batching, bounds and
retries against a recording client, then the rows landing in the local BigQuery and the
reader counting the keys back, by SQL, through the real client."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import google.cloud.bigquery as bigquery
import pytest

from cascade.core.warehouse import check_row
from cascade.serving.plan import advise
from cascade.serving.request_log import (
    REQUEST_LOG_SCHEMA,
    RequestLog,
    ensure_request_log_table,
    key_counts_query,
    numeric_request_id,
    read_key_counts,
    request_log_row,
)
from tests.bigquery_emulator import bigquery_client, bigquery_local  # noqa: F401

DEADLINE_S = 10.0
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TABLE = "cascade-local.cascade_request_log.request_response_logging"


class RecordingClient:
    """``insert_rows_json`` as the writer calls it; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.failures = failures
        self.gate = gate
        self.calls: list[tuple[str, list[dict[str, Any]], list[str]]] = []
        self.attempts = 0
        self.lock = threading.Lock()

    def insert_rows_json(
        self, table: str, rows: list[dict[str, Any]], *, row_ids: list[str]
    ) -> list[Any]:
        if self.gate is not None:
            assert self.gate.wait(DEADLINE_S)
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.failures:
                raise ConnectionError("BigQuery unreachable")
            self.calls.append((table, list(rows), list(row_ids)))
        return []

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for _, rows, _ in self.calls for row in rows]


def _log(client: Any, **options: Any) -> RequestLog:
    defaults: dict[str, Any] = {"flush_interval_s": 60.0, "retry_backoff_s": 0.01}
    return RequestLog(client, TABLE, clock=lambda: NOW, **(defaults | options))


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = threading.Event()
    timer = threading.Timer(DEADLINE_S, deadline.set)
    timer.start()
    try:
        while not condition():
            assert not deadline.wait(0.01), "condition not met before the deadline"
    finally:
        timer.cancel()


# -- rows -----------------------------------------------------------------------------------


def test_a_row_has_vertex_ais_columns_and_passes_bigquerys_checks() -> None:
    row = request_log_row(
        endpoint="projects/1/locations/us-central1/endpoints/2",
        deployed_model_id="3",
        request_id="9f0c-uuid",
        keys=["a", 7, 'odd "key"\n'],
        precomputed=[True, False, True],
        logged_at=NOW,
    )
    assert set(row) == {field.name for field in REQUEST_LOG_SCHEMA}
    assert check_row(REQUEST_LOG_SCHEMA, row, 0) == []
    assert row["request_payload"] == ['{"key": "a"}', '{"key": 7}', '{"key": "odd \\"key\\"\\n"}']
    assert row["response_payload"][0] == '{"key": "a", "precomputed": true}'
    assert row["logging_time"] == "2026-11-30T12:00:00+00:00"
    assert row["request_id"] == numeric_request_id("9f0c-uuid")


def test_request_ids_fit_numeric() -> None:
    assert numeric_request_id(42) == 42
    assert numeric_request_id("12345") == 12345
    derived = numeric_request_id("not-a-number")
    assert derived == numeric_request_id("not-a-number")
    assert 0 <= derived < 2**53
    assert 0 <= numeric_request_id(-1) < 2**53
    assert 0 <= numeric_request_id("9" * 40) < 2**53
    assert 0 <= numeric_request_id(2**60) < 2**53


def test_flags_must_match_the_keys() -> None:
    with pytest.raises(ValueError, match="2 keys but 1 precomputed flags"):
        request_log_row(
            endpoint="e", deployed_model_id="1", request_id=1, keys=["a", "b"], precomputed=[True]
        )


def test_names_are_checked_before_any_sql() -> None:
    with pytest.raises(ValueError, match=r"not project\.dataset\.table"):
        RequestLog(RecordingClient(), "p.d.t`; DROP TABLE x; --")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a plain field name"):
        key_counts_query(TABLE, "key') OR 1=1 --")
    assert "JSON_VALUE(instance, '$.user_id')" in key_counts_query(TABLE, "user_id")


# -- the writer -------------------------------------------------------------------------------


def test_records_are_sent_in_batches_on_flush() -> None:
    client = RecordingClient()
    log = _log(client, batch_rows=3)
    try:
        for number in range(7):
            log.record(
                endpoint="clicks", deployed_model_id="1", request_id=number, keys=[f"k{number}"]
            )
        assert log.flush(DEADLINE_S)
        sizes = [len(rows) for _, rows, _ in client.calls]
        # Batches of at most batch_rows; how the 7 split depends on when the sender
        # thread woke (a full batch wakes it while records still arrive).
        assert sum(sizes) == 7
        assert max(sizes) == 3
        assert len(sizes) >= 3
        assert [row["request_id"] for row in client.rows] == list(range(7))
        ids = [row_id for _, _, row_ids in client.calls for row_id in row_ids]
        assert len(set(ids)) == 7  # insertIds: BigQuery drops a retried duplicate
        assert log.counters.written == 7
    finally:
        log.close(DEADLINE_S)


def test_a_full_batch_is_sent_without_waiting_for_the_interval() -> None:
    client = RecordingClient()
    log = _log(client, batch_rows=2)  # interval 60 s: only a full batch wakes the sender
    try:
        log.record(endpoint="e", deployed_model_id="1", request_id=1, keys=["a"])
        log.record(endpoint="e", deployed_model_id="1", request_id=2, keys=["b"])
        _wait_for(lambda: log.counters.written == 2)
    finally:
        log.close(DEADLINE_S)


def test_the_interval_sends_a_partial_batch() -> None:
    client = RecordingClient()
    log = _log(client, batch_rows=100, flush_interval_s=0.05)
    try:
        log.record(endpoint="e", deployed_model_id="1", request_id=1, keys=["a"])
        _wait_for(lambda: log.counters.written == 1)
    finally:
        log.close(DEADLINE_S)


def test_a_failed_batch_is_retried_then_written() -> None:
    client = RecordingClient(failures=2)
    log = _log(client, max_attempts=3)
    try:
        log.record(endpoint="e", deployed_model_id="1", request_id=1, keys=["a"])
        assert log.flush(DEADLINE_S)
        assert client.attempts == 3
        assert len(client.rows) == 1
        assert log.counters.failed == 0
    finally:
        log.close(DEADLINE_S)


def test_a_batch_failing_every_attempt_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = RecordingClient(failures=10**6)
    log = _log(client, max_attempts=3)
    try:
        log.record(endpoint="e", deployed_model_id="1", request_id=1, keys=["a", "b"])
        assert log.flush(DEADLINE_S)
        assert client.attempts == 3
        assert log.counters.failed == 1
        assert log.counters.written == 0
        assert "dropped after 3 attempts" in caplog.text
        # the sender lives on: the next row goes through once BigQuery is back
        client.failures = 0
        log.record(endpoint="e", deployed_model_id="1", request_id=2, keys=["c"])
        assert log.flush(DEADLINE_S)
        assert log.counters.written == 1
    finally:
        log.close(DEADLINE_S)


def test_the_buffer_is_bounded_and_record_never_blocks() -> None:
    gate = threading.Event()  # BigQuery hangs until the gate opens
    client = RecordingClient(gate=gate)
    log = _log(client, batch_rows=1, max_buffered=5)
    try:
        for number in range(50):
            log.record(endpoint="e", deployed_model_id="1", request_id=number, keys=["a"])
        assert log.counters.dropped >= 50 - 5 - 1  # at most one batch in flight
        assert log.counters.recorded + log.counters.dropped == 50
        gate.set()
        assert log.flush(DEADLINE_S)
        assert log.counters.written == log.counters.recorded
    finally:
        gate.set()
        log.close(DEADLINE_S)


def test_record_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    client = RecordingClient()
    log = _log(client)
    try:
        log.record(endpoint="e", deployed_model_id="1", request_id=1, keys=["a"], precomputed=[])
        log.record(endpoint="e", deployed_model_id="1", request_id=2, keys=[object()])
        assert "could not record request 1" in caplog.text
        assert log.flush(DEADLINE_S)
        assert len(client.rows) == 1  # the object key is logged as its str()
    finally:
        log.close(DEADLINE_S)


def test_records_after_close_are_dropped() -> None:
    client = RecordingClient()
    log = _log(client)
    log.record(endpoint="e", deployed_model_id="1", request_id=1, keys=["a"])
    assert log.close(DEADLINE_S)
    log.record(endpoint="e", deployed_model_id="1", request_id=2, keys=["b"])
    assert len(client.rows) == 1
    assert log.counters.dropped == 1


# -- through the local BigQuery -------------------------------------------------------------


def test_rows_land_in_the_local_bigquery_and_the_keys_read_back(
    bigquery_client: bigquery.Client,  # noqa: F811
) -> None:
    table = f"{bigquery_client.project}.cascade_request_log.request_response_logging"
    ensure_request_log_table(bigquery_client, table)
    ensure_request_log_table(bigquery_client, table)  # idempotent
    stored = bigquery_client.get_table(table)
    assert [(f.name, f.field_type, f.mode) for f in stored.schema] == [
        (f.name, f.field_type, f.mode) for f in REQUEST_LOG_SCHEMA
    ]
    now = datetime.now(UTC)
    log = RequestLog(bigquery_client, table, batch_rows=4, flush_interval_s=60.0)
    requests = [["a", "b"], ["a"], ["a", 'we"ird\nkey'], ["b"], ["a"], ["c"]]
    try:
        for number, keys in enumerate(requests):
            log.record(
                endpoint="clicks",
                deployed_model_id="3",
                request_id=number,
                keys=keys,
                precomputed=[key == "a" for key in keys],
            )
        log.record(endpoint="other", deployed_model_id="1", request_id=99, keys=["a"])
        assert log.flush(DEADLINE_S)
    finally:
        log.close(DEADLINE_S)
    assert log.counters.written == 7
    assert log.counters.failed == 0
    counted = read_key_counts(
        bigquery_client,
        table,
        endpoint="clicks",
        start=now - timedelta(minutes=5),
        end=now + timedelta(minutes=5),
    )
    assert counted.counts == {"a": 4, "b": 2, 'we"ird\nkey': 1, "c": 1}
    assert counted.unkeyed == 0
    assert advise(counted.counts).mode == "static"
    earlier = read_key_counts(
        bigquery_client,
        table,
        endpoint="clicks",
        start=now - timedelta(days=2),
        end=now - timedelta(days=1),
    )
    assert earlier.counts == {}
