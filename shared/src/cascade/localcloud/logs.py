"""``cascade logs <run>``: the structured log lines of every local process for one run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LogEntry", "run_log_entries"]

_LABELS = "logging.googleapis.com/labels"


@dataclass(frozen=True)
class LogEntry:
    timestamp: str
    process: str
    severity: str
    message: str
    step: str


def _entries(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    yield entry


def run_log_entries(log_dir: Path, run_id: str) -> list[LogEntry]:
    """Every JSON log line labelled with ``run_id``, from all processes, in time order."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        for entry in _entries(path):
            labels = entry.get(_LABELS) or {}
            if labels.get("run_id") != run_id:
                continue
            found.append(
                LogEntry(
                    timestamp=str(entry.get("timestamp", "")),
                    process=path.stem,
                    severity=str(entry.get("severity", "")),
                    message=str(entry.get("message", "")),
                    step=str(labels.get("step", "")),
                )
            )
    return sorted(found, key=lambda entry: entry.timestamp)
