"""The validation section: verdict, anomalies, drift per feature, distributions.

Read from what the validate step wrote under ``runs/<run_id>/validation/`` (the names
its step outputs give, else the step's fixed names): ``stats.pb`` (the file's TFMD
statistics) and ``anomalies.pbtxt`` (TFMD ``Anomalies``: findings per feature and, in
``drift_skew_info``, every drift distance measured with its threshold).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import InvalidConfigError
from cascade.core.paths import RunPaths
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.runs import RunRecord, StepRecord
from cascade.core.store import ArtifactStore
from cascade.core.validation_config import ValidationConfig
from cascade.report.charts import Bar, BarRow, SvgChart, horizontal_bar_chart
from cascade.report.distributions import baseline_before, distribution_views, read_summary
from cascade.report.page_model import DriftView, Fact, FindingView, ValidationSection
from cascade.report.reading import object_name
from cascade.validation.tfmd import anomalies_pb2

__all__ = ["validation_section"]

_FILES = {
    "statistics": "stats.pb",
    "anomalies": "anomalies.pbtxt",
    "schema": "schema.pbtxt",
    "report": "report.html",
}
_VERDICTS = {
    "succeeded": "accepted",
    "rejected": "rejected",
    "running": "in progress",
    "failed": "failed",
}
_MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon divergence",
    # TFMD names no two-sample KS measurement; Cascade writes its KS statistic as UNKNOWN.
    anomalies_pb2.DriftSkewInfo.Measurement.UNKNOWN: "Kolmogorov-Smirnov statistic",
}
_SHORT_MEASURES = {"Jensen": "JS", "Kolmogorov": "KS", "L-infinity": "L∞"}


def _names(artifacts: ArtifactStore, run_id: str, step: StepRecord | None) -> dict[str, str]:
    """Object names of the step's files: from its outputs when they say, else the defaults."""
    folder = RunPaths(run_id).step_dir("validation")
    names = {key: f"{folder}/{file}" for key, file in _FILES.items()}
    outputs = step.outputs if step is not None else {}
    for key in names:
        uri = outputs.get(key)
        name = object_name(artifacts, uri) if isinstance(uri, str) else None
        if name is not None:
            names[key] = name
    return names


def _parse_anomalies(data: bytes) -> Any | None:
    anomalies = anomalies_pb2.Anomalies()
    try:
        text_format.Parse(data.decode("utf-8", errors="replace"), anomalies)
    except text_format.ParseError:
        return None
    return anomalies


def _severity(line: str, info: Any, outputs: dict[str, Any], skew: tuple[str, str]) -> str:
    """A finding's own severity, as the step recorded it; else its feature's worst.

    ``retrain`` for a value skew (``skew``, its feature and description, is among the
    step's ``value_skews``): the file was accepted and retrains the model.
    """
    if line in (outputs.get("errors") or []):
        return "error"
    if line in (outputs.get("warnings") or []):
        return "warning"
    if skew in _value_skews(outputs):
        return "retrain"
    return "error" if info.severity == anomalies_pb2.AnomalyInfo.ERROR else "warning"


def _value_skews(outputs: dict[str, Any]) -> set[tuple[str, str]]:
    recorded = outputs.get("value_skews") or []
    return {
        (str(item.get("feature", "")), str(item.get("description", "")))
        for item in recorded
        if isinstance(item, dict)
    }


def _findings(anomalies: Any, outputs: dict[str, Any]) -> list[FindingView]:
    infos = [(name, anomalies.anomaly_info[name]) for name in sorted(anomalies.anomaly_info)]
    if anomalies.HasField("dataset_anomaly_info"):
        infos.append(("", anomalies.dataset_anomaly_info))
    findings = []
    for feature, info in infos:
        subject = f"feature {feature!r}" if feature else "dataset"
        for reason in info.reason:
            line = f"{subject}: {reason.short_description}: {reason.description}"
            findings.append(
                FindingView(
                    feature=feature,
                    severity=_severity(line, info, outputs, (feature, reason.description)),
                    short_description=reason.short_description,
                    description=reason.description,
                )
            )
    order = {"error": 0, "retrain": 1}
    return sorted(findings, key=lambda finding: order.get(finding.severity, 2))


def _drift(anomalies: Any) -> list[DriftView]:
    drift = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            drift.append(
                DriftView(
                    feature=feature,
                    measure=_MEASURES.get(measurement.type, "distance"),
                    value=measurement.value,
                    threshold=measurement.threshold,
                    exceeded=measurement.value > measurement.threshold,
                )
            )
    return sorted(drift, key=lambda item: (not item.exceeded, item.feature))


def _short(measure: str) -> str:
    return next((short for word, short in _SHORT_MEASURES.items() if word in measure), "?")


def _drift_chart(drift: list[DriftView]) -> SvgChart | None:
    """Each feature's drift distance as a bar, its threshold as a tick."""
    if not drift:
        return None
    rows = [
        BarRow(
            label=f"{item.feature} ({_short(item.measure)})",
            bars=[
                Bar(
                    value=item.value,
                    css="exceeded" if item.exceeded else "within",
                    title=f"{item.feature}: {item.measure} {item.value:.4g}",
                )
            ],
            value_text=f"{item.value:.3g} / {item.threshold:.3g}",
            marker=item.threshold,
            marker_title=f"threshold {item.threshold:.4g}",
        )
        for item in drift
    ]
    return horizontal_bar_chart(rows, description="drift distance per feature vs its threshold")


def _config(artifacts: ArtifactStore, dataset: str) -> ValidationConfig:
    try:
        return load_pipeline_config(artifacts, dataset).validation
    except InvalidConfigError:
        return ValidationConfig()


def _missing(record: RunRecord, step: StepRecord | None) -> str:
    if step is None and record.trigger.kind == "request":
        return (
            "Nothing was validated in this run: it was started by a train request and "
            "trained on data that earlier runs validated."
        )
    if step is None:
        return "The validate step has not run for this run: there are no validation artifacts."
    if step.error:
        return f"Validation ended before writing its statistics: {step.error}"
    return "The validate step wrote no statistics or anomalies for this run (yet)."


def validation_section(artifacts: ArtifactStore, record: RunRecord) -> ValidationSection:
    step = record.validation
    names = _names(artifacts, record.run_id, step)
    current = read_summary(artifacts, names["statistics"])
    stored_anomalies = artifacts.read(names["anomalies"])
    if current is None or stored_anomalies is None:
        return ValidationSection(missing=_missing(record, step))
    anomalies = _parse_anomalies(stored_anomalies.data)
    if anomalies is None:
        problem = f"{artifacts.uri(names['anomalies'])} is not a TFMD Anomalies text proto."
        return ValidationSection(missing=problem)
    outputs = step.outputs if step is not None else {}
    drift = _drift(anomalies)
    section = ValidationSection(
        verdict=_VERDICTS.get(step.state, step.state) if step is not None else "unknown",
        source=str(outputs.get("source") or record.trigger.uri),
        examples=current.num_examples,
        findings=_findings(anomalies, outputs),
        drift=drift,
        drift_chart=_drift_chart(drift),
        artifacts=_artifacts(artifacts, names, outputs),
    )
    if not drift:
        section.baseline_note = (
            "No drift was measured: the dataset had no baseline yet (its first file), or "
            "this file had too few examples to judge."
        )
        return section
    config = _config(artifacts, record.dataset)
    started = step.started_at if step is not None else record.created_at
    baseline = baseline_before(artifacts, record.dataset, record.run_id, started, config)
    section.baseline_note = baseline.note
    if baseline.summary is not None:
        section.distributions = distribution_views(drift, baseline.summary, current, config)
    return section


def _artifacts(
    artifacts: ArtifactStore, names: dict[str, str], outputs: dict[str, Any]
) -> list[Fact]:
    facts = [Fact(label=key, value=artifacts.uri(name)) for key, name in names.items()]
    if outputs.get("quarantine"):
        facts.append(Fact(label="quarantine", value=str(outputs["quarantine"])))
    return facts
