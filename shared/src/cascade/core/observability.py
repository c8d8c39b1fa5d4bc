"""Structured JSON logs that Cloud Logging understands, labelled by run and step.

Each line is one JSON object (severity, message, ``logging.googleapis.com/labels``)
written by google-cloud-logging's StructuredLogHandler: Cloud Functions ship stdout to
Cloud Logging as structured entries, and the local cloud's per-process log files hold
the same lines, which ``cascade logs <run>`` filters by the ``run_id`` label.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from google.cloud.logging_v2.handlers import StructuredLogHandler

__all__ = ["RunLogger", "configure_logging", "run_logger"]

_configured = False


def configure_logging(*, function_name: str, project: str, level: int = logging.INFO) -> None:
    """Send the ``cascade`` loggers to stdout as structured JSON (once per process)."""
    global _configured
    if _configured:
        return
    handler = StructuredLogHandler(  # type: ignore[no-untyped-call]
        labels={"function": function_name}, stream=sys.stdout, project_id=project
    )
    handler.addFilter(_add_timestamp)
    root = logging.getLogger("cascade")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    _configured = True


def _add_timestamp(record: logging.LogRecord) -> bool:
    """Put the record's time in the entry (Cloud Logging reads ``timestamp``)."""
    fields = dict(getattr(record, "json_fields", None) or {})
    fields.setdefault(
        "timestamp", datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")
    )
    record.json_fields = fields
    return True


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds ``run_id`` / ``step`` / ``dataset`` labels to every record it logs."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        labels = {**(self.extra or {}), **extra.pop("labels", {})}
        extra["labels"] = {key: str(value) for key, value in labels.items() if value}
        kwargs["extra"] = extra
        return msg, kwargs


def run_logger(name: str, *, run_id: str = "", step: str = "", dataset: str = "") -> RunLogger:
    return RunLogger(logging.getLogger(name), {"run_id": run_id, "step": step, "dataset": dataset})
