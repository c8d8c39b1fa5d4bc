"""The run report's "Monitoring" part: the served model scored on this run's file
(continued evaluation, ``cascade.evaluation.monitoring``) and the dataset's recent points."""

from __future__ import annotations

from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord
from cascade.core.store import ArtifactStore
from cascade.evaluation.monitoring import MonitoringPoint, read_series
from cascade.report.page_model import Fact, MonitoringRow, MonitoringSection
from cascade.report.reading import read_json

__all__ = ["RECENT_POINTS", "monitoring_section"]

RECENT_POINTS = 10
"""The dataset's last monitored files shown beside this run's."""


def _row(point: MonitoringPoint) -> MonitoringRow:
    decay = point.decay
    if point.status != "scored":
        verdict = point.status.replace("_", " ")
    elif decay is not None and decay.decayed:
        verdict = "decayed: retraining asked for"
    else:
        verdict = "ok" if decay is not None and decay.judged else "not judged"
    return MonitoringRow(
        run_id=point.run_id,
        at=point.at,
        file=point.file_uri,
        model_version=f"v{point.model_version}" if point.model_version else "-",
        rows=point.rows_scored,
        metric="-" if decay is None else decay.metric,
        value=None if decay is None else decay.value,
        reference=None if decay is None else decay.reference,
        verdict=verdict,
    )


def monitoring_section(artifacts: ArtifactStore, record: RunRecord) -> MonitoringSection | None:
    """None when the run's file was not monitored (a train request's run, or before)."""
    name = DatasetPaths(record.dataset).monitoring_point(record.run_id)
    read = read_json(artifacts, name, MonitoringPoint)
    point = read.value
    if point is None:
        return None
    facts = [
        Fact(label="status", value=point.status.replace("_", " ")),
        Fact(label="detail", value=point.detail or "-"),
        Fact(label="served model", value=f"v{point.model_version} {point.model_uri}")
        if point.model_version
        else Fact(label="served model", value="none"),
        Fact(
            label="rows",
            value=f"{point.rows_scored} scored of {point.rows_labelled} labelled"
            + (f" (every {point.sampled_every}th row)" if point.sampled_every > 1 else "")
            + (
                f"; {point.rows_by_other_versions} answered by another version, left out"
                if point.rows_by_other_versions
                else ""
            ),
        ),
        Fact(label="record", value=artifacts.uri(name)),
    ]
    if point.metrics is not None:
        overall = ", ".join(
            f"{metric} {value:.4g}"
            for metric, value in sorted(point.metrics.overall.metrics.items())
        )
        facts.insert(2, Fact(label="metrics", value=overall or "none"))
    recent = read_series(artifacts, record.dataset, last=RECENT_POINTS)
    return MonitoringSection(facts=facts, recent=[_row(item) for item in recent])
