"""What the demo prints about a rejected file and an evaluated candidate."""

from __future__ import annotations

import io
from pathlib import Path

from google.protobuf import text_format
from rich.console import Console

from cascade.cli.demo_explain import print_evaluation, print_rejection
from cascade.core.fakes import MemoryArtifactStore
from cascade.evaluation.policy import CheckResult
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.validation.tfmd import anomalies_pb2
from tests.unit.run_records import T0, deployed_steps, request_run, step, upload_run

RUN = "credit-0123456789abcdef"
ANOMALIES = f"runs/{RUN}/validation/anomalies.pbtxt"
Measurement = anomalies_pb2.DriftSkewInfo.Measurement


def _anomalies() -> bytes:
    proto = anomalies_pb2.Anomalies()
    for feature, kind, value in (
        ("income", Measurement.JENSEN_SHANNON_DIVERGENCE, 0.228),
        ("age", Measurement.JENSEN_SHANNON_DIVERGENCE, 0.03),
        ("employment", Measurement.L_INFTY, 0.195),
    ):
        info = proto.drift_skew_info.add()
        info.path.step.append(feature)
        info.drift_measurements.add(type=kind, value=value, threshold=0.1)
    return text_format.MessageToString(proto).encode()


def _console() -> Console:
    """Rendered into memory, never to pytest's captured stdout, whose encoding and
    terminal detection vary with the worker."""
    return Console(width=200, record=True, file=io.StringIO(), color_system=None)


def test_a_rejection_names_the_drifted_features_the_other_anomalies_and_the_quarantine(
    tmp_path: Path,
) -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    artifacts.write(ANOMALIES, _anomalies())
    report = tmp_path / "cascade-artifacts" / "runs" / RUN / "validation" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    validate = step(
        "rejected",
        0,
        0.2,
        anomalies=f"gs://cascade-artifacts/{ANOMALIES}",
        quarantine=f"gs://cascade-artifacts/quarantine/credit/{RUN}",
        report=f"gs://cascade-artifacts/runs/{RUN}/validation/report.html",
        errors=[
            "feature 'income': High approximate Jensen-Shannon divergence between current and "
            "previous: ... is 0.228, above the threshold 0.1.",
            "feature 'region': Unexpected string values: 'overseas' (~16%).",
        ],
    )
    console = _console()

    print_rejection(
        console,
        artifacts,
        upload_run(RUN, state="rejected", steps={"validate": validate}),
        tmp_path,
    )

    text = console.export_text()
    assert text.index("income") < text.index("employment")  # worst first
    assert "0.228" in text
    assert "0.195" in text
    assert "age" not in text  # below its threshold
    assert "also blocking: feature 'region': Unexpected string values" in text
    assert "also blocking: feature 'income'" not in text
    assert f"quarantined to gs://cascade-artifacts/quarantine/credit/{RUN}/" in text
    assert str(report) in text


def _evaluation(verdict: str, summary: str) -> EvaluationRecord:
    return EvaluationRecord(
        dataset="credit",
        run_id=RUN,
        model_uri="gs://m",
        metrics_uri="gs://m/metrics.json",
        infra_check_uri="gs://m/infra_check.json",
        verdict=verdict,  # type: ignore[arg-type]
        first_run=False,
        first_run_policy="absolute_only",
        deployed_model_uri="gs://cascade-artifacts/runs/credit-ffffffffffffffff/training/model",
        checks=[
            CheckResult(
                name="loss regression <= 0.05 relative (overall)",
                kind="change",
                tier="blocking",
                verdict="fail" if verdict == "not_blessed" else "pass",
                metric="loss",
                slice="overall",
                value=0.52,
                baseline_value=0.42,
            )
        ],
        summary=summary,
        evaluated_at=T0,
    )


def test_a_candidate_kept_out_says_why_and_that_production_keeps_serving() -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    artifacts.write_json(
        evaluation_path(RUN), _evaluation("not_blessed", "not blessed: 1 blocking check(s) failed")
    )
    steps = {
        name: record
        for name, record in deployed_steps().items()
        if name not in ("validate", "transform", "deploy")
    }
    console = _console()

    print_evaluation(console, artifacts, request_run(RUN, state="rejected", steps=steps))

    text = console.export_text()
    assert "evaluation: not_blessed — not blessed: 1 blocking check(s) failed" in text
    assert "eval loss: candidate 0.5200 vs production 0.4200" in text
    assert "not deployed: the production model keeps serving" in text


def test_a_deployed_candidate_says_which_version_it_became() -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    artifacts.write_json(evaluation_path(RUN), _evaluation("blessed", "blessed: 1 checks passed"))
    console = _console()

    print_evaluation(console, artifacts, upload_run(RUN, steps=deployed_steps()))

    assert "deploy: promoted v3" in console.export_text()
