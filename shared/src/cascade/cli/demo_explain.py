"""What the demo says about a run's outcome: why data was rejected, how a model was judged.

Reads what the steps stored: the validation's ``anomalies.pbtxt`` (a TFMD ``Anomalies``
with every drift measurement), the quarantine prefix, ``evaluation.json``; and asks the
model server for one prediction, as a client of the endpoint would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade.cli.run_view import deploy_result
from cascade.cli.sample_data import sample_instance
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord
from cascade.core.store import ArtifactStore
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.validation.tfmd import anomalies_pb2

__all__ = [
    "DriftRow",
    "drift_rows",
    "print_evaluation",
    "print_rejection",
    "show_prediction",
]

_MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon",
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity",
}


@dataclass(frozen=True)
class DriftRow:
    feature: str
    measure: str
    distance: float
    threshold: float


def _object_name(artifacts: ArtifactStore, uri: str) -> str | None:
    prefix = f"gs://{artifacts.bucket_name}/"
    return uri.removeprefix(prefix) if uri.startswith(prefix) else None


def drift_rows(anomalies: Any) -> list[DriftRow]:
    """The drift measurements of a TFMD ``Anomalies`` above their threshold, worst first."""
    rows = [
        DriftRow(
            feature="/".join(info.path.step),
            measure=_MEASURES.get(measurement.type, str(measurement.type)),
            distance=measurement.value,
            threshold=measurement.threshold,
        )
        for info in anomalies.drift_skew_info
        for measurement in info.drift_measurements
        if measurement.value > measurement.threshold
    ]
    return sorted(rows, key=lambda row: row.distance / row.threshold, reverse=True)


def _stored_anomalies(artifacts: ArtifactStore, record: RunRecord) -> Any | None:
    step = record.validation
    uri = "" if step is None else str(step.outputs.get("anomalies", ""))
    name = _object_name(artifacts, uri)
    stored = None if name is None else artifacts.read(name)
    if stored is None:
        return None
    return text_format.Parse(stored.data.decode(), anomalies_pb2.Anomalies())


def _drift_table(rows: list[DriftRow]) -> Table:
    table = Table(title="drift against the baseline (all data accepted so far)")
    for column in ("feature", "measure", "distance", "threshold", "x threshold"):
        table.add_column(column, justify="left" if column in ("feature", "measure") else "right")
    for row in rows:
        table.add_row(
            escape(row.feature),
            row.measure,
            f"{row.distance:.3f}",
            f"{row.threshold:.3f}",
            f"{row.distance / row.threshold:.1f}",
        )
    return table


def _is_drift(error: str) -> bool:
    return any(
        measure in error
        for measure in ("Kolmogorov-Smirnov", "Jensen-Shannon divergence", "Linfty distance")
    )


def print_rejection(
    console: Console, artifacts: ArtifactStore, record: RunRecord, gcs_root: Path
) -> None:
    """Which features drifted (distance vs threshold), what else blocked, where to look."""
    validate = record.validation
    assert validate is not None  # explained only once validation ended
    anomalies = _stored_anomalies(artifacts, record)
    rows = [] if anomalies is None else drift_rows(anomalies)
    if rows:
        console.print(_drift_table(rows))
    for error in validate.outputs.get("errors", []):
        if not _is_drift(str(error)):
            console.print(f"  also blocking: {escape(str(error))}")
    console.print(f"quarantined to {escape(str(validate.outputs.get('quarantine', '')))}/")
    report_uri = str(validate.outputs.get("report", ""))
    console.print(f"validation report: {escape(report_uri)}")
    local_report = (
        gcs_root / artifacts.bucket_name / RunPaths(record.run_id).step_dir("validation")
    ) / "report.html"
    if local_report.is_file():
        console.print(f"  on this machine: {local_report}")


def _loss_comparison(evaluation: EvaluationRecord) -> str:
    for check in evaluation.checks:
        if (
            check.metric == "loss"
            and check.slice == "overall"
            and check.value is not None
            and check.baseline_value is not None
        ):
            return (
                f"eval loss: candidate {check.value:.4f} vs production {check.baseline_value:.4f}"
            )
    return ""


def print_evaluation(console: Console, artifacts: ArtifactStore, record: RunRecord) -> None:
    """The evaluation's verdict against the production model, and what deploy did."""
    found = artifacts.read_model(evaluation_path(record.run_id), EvaluationRecord)
    if found is None:
        console.print(f"no evaluation for {record.run_id}: {escape(record.error or '')}")
        return
    evaluation = found[0]
    console.print(f"evaluation: [bold]{evaluation.verdict}[/bold] — {escape(evaluation.summary)}")
    comparison = _loss_comparison(evaluation)
    if comparison:
        console.print(f"  {comparison}")
    if evaluation.deployed_model_uri:
        console.print(f"  production model when judged: {escape(evaluation.deployed_model_uri)}")
    result = deploy_result(record)
    if result:
        console.print(f"deploy: [bold]{result}[/bold]")
    elif not evaluation.blessed:
        console.print("not deployed: the production model keeps serving")


def show_prediction(
    console: Console, model_server_url: str, *, project: str, region: str, endpoint: str
) -> bool:
    """Ask the endpoint about one sample row (Vertex AI's predict route); True on 200."""
    url = (
        f"{model_server_url}/v1/projects/{project}/locations/{region}/endpoints/{endpoint}:predict"
    )
    body = {"instances": [sample_instance()]}
    console.print(f"POST {url}")
    console.print(escape(json.dumps(body)))
    try:
        response = requests.post(url, json=body, timeout=30)
    except requests.RequestException as error:
        console.print(f"[red]no answer:[/red] {escape(str(error))}")
        return False
    if response.status_code != 200:
        console.print(f"-> HTTP {response.status_code} {escape(response.text.strip())}")
        return False
    answer = response.json()
    console.print(
        f"-> version {answer.get('deployedModelId')} answered: "
        f"{escape(json.dumps(answer.get('predictions')))}"
    )
    return True
