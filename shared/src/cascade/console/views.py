"""What the console's pages and their JSON show, built from the run records.

Every string here may come from data (dataset and file names, errors): templates
escape it, and the page's script only ever sets it as text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cascade.core.run_index import IndexedRun, trigger_kind_of
from cascade.core.runs import RunRecord

__all__ = ["ERROR_CHARS", "RUN_STATES", "TRIGGER_KINDS", "run_row", "when"]

ERROR_CHARS = 300
RUN_STATES = ("running", "succeeded", "rejected", "failed")
TRIGGER_KINDS = ("object", "request")


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    moment = value.astimezone(UTC) if value.tzinfo is not None else value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= ERROR_CHARS else flat[: ERROR_CHARS - 1] + "…"


def _trigger_text(record: RunRecord) -> str:
    if record.trigger.kind == "object":
        return record.trigger.uri
    return record.trigger.reason or f"request {record.trigger.request_id or ''}".strip()


def run_row(run: IndexedRun) -> dict[str, Any]:
    """One row of the runs list (the page's table and ``/api/runs`` alike), from the
    run-level record (a run's steps are on its own page)."""
    record = run.record
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "dataset": run.dataset,
        "trigger": trigger_kind_of(run.run_id),
        "trigger_text": "",
        "state": "unknown",
        "created_at": "",
        "updated_at": "",
        "error": "",
    }
    if record is None:
        row["error"] = "the run's record is missing or unreadable"
        return row
    row.update(
        trigger_text=_trigger_text(record),
        state=record.state,
        created_at=when(record.created_at),
        updated_at=when(record.updated_at),
        error=_short(record.error),
    )
    return row
