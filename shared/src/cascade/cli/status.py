"""The runs table of ``cascade status``: one row per run, one column per step.

``run_rows`` is a pure function of run records (unit-tested); ``runs_table`` renders
its rows with rich; ``latest_runs`` reads the records from the artifacts bucket.
``monitoring_table``: the last points of each dataset's continued evaluation (the
served model scored on each labelled accepted file, ``cascade.evaluation.monitoring``).

A landed object whose name validate refuses (at the bucket's root, an invalid dataset
folder, ``..`` segments) has a run under the pseudo-dataset ``invalid-uploads``: its row
shows the whole object name and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.markup import escape
from rich.table import Table

from cascade.cli.run_view import (
    STEPS,
    deploy_result,
    evaluation_verdict,
    model_version,
    step_duration_s,
    trigger_label,
    validation_verdict,
)
from cascade.core.runs import RunLedger, RunRecord
from cascade.core.store import ArtifactStore
from cascade.evaluation.monitoring import MonitoringPoint, read_series
from cascade.validation.names import INVALID_NAMES_DATASET

__all__ = [
    "MONITORING_POINTS",
    "RunRow",
    "latest_runs",
    "monitoring_cells",
    "monitoring_table",
    "run_rows",
    "runs_table",
    "select_runs",
    "step_cell",
]

MONITORING_POINTS = 5
"""The last monitored files shown per dataset."""

_STATE_STYLES = {"succeeded": "green", "rejected": "yellow", "failed": "red", "running": "cyan"}


@dataclass(frozen=True)
class RunRow:
    """One run as the table shows it; ``steps`` has one cell per name in ``STEPS``."""

    run_id: str
    dataset: str
    trigger: str
    state: str
    steps: tuple[str, ...]
    model: str
    verdicts: str


def step_cell(record: RunRecord, step: str) -> str:
    """``-`` (never ran), ``running``, ``0.45s`` (succeeded) or ``rejected 0.31s``."""
    found = record.steps.get(step)
    if found is None:
        return "-"
    if found.state == "running":
        return "running"
    duration = step_duration_s(record, step)
    timing = "" if duration is None else f"{duration:.2f}s"
    if found.state == "succeeded":
        return timing or "succeeded"
    return f"{found.state} {timing}".strip()


def _refused_name(record: RunRecord) -> bool:
    return record.dataset == INVALID_NAMES_DATASET and record.trigger.kind == "object"


def _trigger(record: RunRecord) -> str:
    """The whole object name for a refused name (the name is what is wrong)."""
    if _refused_name(record):
        return record.trigger.uri.removeprefix("gs://").partition("/")[2] or record.trigger.uri
    return trigger_label(record)


def _verdicts(record: RunRecord) -> str:
    if _refused_name(record) and record.state == "failed":
        reason = (record.error or "").removeprefix("validate: ")
        return f"name refused: {reason}" if reason else "name refused"
    verdicts = (validation_verdict(record), evaluation_verdict(record), deploy_result(record))
    return " / ".join(verdict for verdict in verdicts if verdict)


def run_rows(records: Iterable[RunRecord]) -> list[RunRow]:
    """The table's rows, in the order of ``records``."""
    return [
        RunRow(
            run_id=record.run_id,
            dataset=record.dataset,
            trigger=_trigger(record),
            state=record.state,
            steps=tuple(step_cell(record, step) for step in STEPS),
            model=model_version(record),
            verdicts=_verdicts(record),
        )
        for record in records
    ]


def select_runs(
    records: Iterable[RunRecord], *, limit: int, dataset: str | None = None
) -> list[RunRecord]:
    """The newest ``limit`` runs, of ``dataset`` only when given."""
    kept = [record for record in records if dataset is None or record.dataset == dataset]
    return sorted(kept, key=lambda record: record.created_at, reverse=True)[:limit]


def latest_runs(
    artifacts: ArtifactStore, *, limit: int, dataset: str | None = None
) -> list[RunRecord]:
    """The newest run records in the artifacts bucket (``runs/<run_id>/run.json``)."""
    ledger = RunLedger(artifacts)
    prefix = "runs/" if dataset is None else f"runs/{dataset}-"
    records = []
    for name in artifacts.list_names(prefix):
        parts = name.split("/")
        if len(parts) == 3 and parts[2] == "run.json":
            record = ledger.get(parts[1])
            if record is not None:
                records.append(record)
    return select_runs(records, limit=limit, dataset=dataset)


def _styled(cell: str) -> str:
    """Coloured by the state a cell starts with; a bare duration is a success."""
    style = "dim" if cell == "-" else _STATE_STYLES.get(cell.split(" ", 1)[0], "green")
    return f"[{style}]{escape(cell)}[/{style}]"


WIDE_TABLE_COLUMNS = 150
"""Narrower terminals get one steps column instead of one column per step."""


def runs_table(
    records: Iterable[RunRecord], *, title: str = "latest runs", width: int | None = None
) -> Table:
    """The rows of ``records`` as a rich table, states coloured; ``width``: the terminal's
    (below WIDE_TABLE_COLUMNS, the steps share one column, a line each)."""
    rows = run_rows(records)
    caption = "training_job: from the job's submission to its end" if rows else "no runs"
    if width is not None and width < WIDE_TABLE_COLUMNS:
        return _compact_table(rows, title=title, caption=caption)
    table = Table(title=title, caption=caption)
    for column in ("run", "dataset", "trigger", "state", *STEPS, "model", "verdicts"):
        table.add_column(column, no_wrap=column in ("run", "state"), overflow="fold")
    for row in rows:
        table.add_row(
            escape(row.run_id),
            escape(row.dataset),
            escape(row.trigger),
            _styled(row.state),
            *(_styled(cell) for cell in row.steps),
            escape(row.model),
            escape(row.verdicts),
        )
    return table


def _compact_table(rows: list[RunRow], *, title: str, caption: str) -> Table:
    table = Table(title=title, caption=caption)
    for column in ("run / trigger", "state", "steps", "model / verdicts"):
        table.add_column(column, overflow="fold")
    for row in rows:
        steps = "\n".join(
            f"{name} {_styled(cell)}"
            for name, cell in zip(STEPS, row.steps, strict=True)
            if cell != "-"
        )
        table.add_row(
            f"{escape(row.run_id)}\n[dim]{escape(row.trigger)}[/dim]",
            _styled(row.state),
            steps,
            f"{escape(row.model)}\n{escape(row.verdicts)}".strip(),
        )
    return table


def monitoring_cells(point: MonitoringPoint) -> tuple[str, ...]:
    """(dataset, run, file, model version, rows, metric value vs reference, verdict)."""
    decay = point.decay
    value = "-"
    if decay is not None and decay.value is not None:
        value = f"{decay.metric} {decay.value:.4g}"
        if decay.reference is not None:
            value += f" (ref {decay.reference:.4g})"
    if point.status != "scored":
        verdict = point.status.replace("_", " ")
    elif decay is not None and decay.decayed:
        verdict = "decayed: retrain"
    elif decay is not None and decay.judged:
        verdict = "ok"
    else:
        verdict = "not judged"
    return (
        point.dataset,
        point.run_id,
        point.file_uri.rsplit("/", 1)[-1],
        f"v{point.model_version}" if point.model_version else "-",
        str(point.rows_scored) if point.status == "scored" else "-",
        value,
        verdict,
    )


def monitoring_table(
    artifacts: ArtifactStore, datasets: Iterable[str], *, last: int = MONITORING_POINTS
) -> Table | None:
    """The last ``last`` monitoring points of each dataset; None when there are none."""
    rows = [
        monitoring_cells(point)
        for dataset in datasets
        if dataset != INVALID_NAMES_DATASET
        for point in read_series(artifacts, dataset, last=last)
    ]
    if not rows:
        return None
    table = Table(
        title="served model on new files (continued evaluation)",
        caption="ref: the served model's value at its evaluation",
    )
    for column in ("dataset", "run", "file", "model", "rows", "metric", "verdict"):
        table.add_column(column, overflow="fold")
    for cells in rows:
        styled = cells[-1]
        if styled.startswith("decayed") or styled == "failed":
            styled = f"[red]{escape(styled)}[/red]"
        else:
            styled = escape(styled)
        table.add_row(*(escape(cell) for cell in cells[:-1]), styled)
    return table
