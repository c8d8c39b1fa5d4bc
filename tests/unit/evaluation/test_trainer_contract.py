"""evaluate reads what the trainer writes: metrics.json and infra_check.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.evaluation.inputs import TrainedMetrics
from tests.unit.evaluation.builders import NOW

evaluation = pytest.importorskip("cascade.trainer.scoring")


def test_the_trainers_evaluation_report_parses_as_trained_metrics() -> None:
    overall = evaluation.MetricSet(examples=100, metrics={"auc": 0.8, "loss": 0.4})
    paris = evaluation.SliceMetrics(
        examples=40, metrics={"auc": 0.7}, feature="city", value="paris"
    )
    report = evaluation.EvaluationReport(
        dataset="credit",
        run_id="credit-1",
        problem_type="binary",
        eval_examples=100,
        slice_features=["city"],
        candidate=evaluation.ModelMetrics(model_uri="gs://b/c", overall=overall, slices=[paris]),
        baseline=evaluation.ModelMetrics(model_uri="gs://b/d", overall=overall),
        created_at=NOW,
    )

    parsed = TrainedMetrics.model_validate_json(report.model_dump_json())

    assert parsed.candidate.slice("city", "paris") is not None
    assert parsed.candidate.slices[0].metrics == {"auc": 0.7}
    assert parsed.baseline is not None
    assert parsed.baseline.model_uri == "gs://b/d"


def test_the_probe_of_a_real_saved_model_is_what_evaluate_judges(tmp_path: Path) -> None:
    from cascade.core.evaluation_config import EvaluationConfig
    from cascade.evaluation.inputs import EvaluationInputs
    from cascade.evaluation.policy import judge
    from cascade.trainer.probe import probe_model
    from tests.unit.serving.saved_models import export_tiny_model

    good = probe_model(export_tiny_model(tmp_path / "good"), calls=5)
    broken = probe_model(export_tiny_model(tmp_path / "broken", broken=True), calls=5)
    metrics = TrainedMetrics(
        dataset="credit",
        run_id="r",
        problem_type="binary",
        eval_examples=1,
        candidate={"model_uri": "m", "overall": {"examples": 1, "metrics": {"loss": 0.1}}},
    )  # type: ignore[arg-type]

    verdicts = [
        judge(
            EvaluationInputs(metrics, "m", check, "i", None),
            EvaluationConfig(),
            deployed_model_uri=None,
        ).verdict
        for check in (good, broken)
    ]

    assert good.passed
    assert not broken.passed
    assert verdicts == ["blessed", "not_blessed"]


def test_the_newest_files_slice_the_trainer_writes_is_what_evaluate_reads() -> None:
    overall = evaluation.MetricSet(examples=100, metrics={"loss": 0.4})
    newest = evaluation.MetricSet(examples=30, metrics={"loss": 0.5})
    report = evaluation.EvaluationReport(
        dataset="credit",
        run_id="credit-1",
        problem_type="binary",
        eval_examples=100,
        slice_features=[],
        candidate=evaluation.ModelMetrics(model_uri="c", overall=overall, newest_files=newest),
        baseline=evaluation.ModelMetrics(model_uri="d", overall=overall),
        newest_files=["gs://l/credit/day-2.csv#2"],
        created_at=NOW,
    )

    parsed = TrainedMetrics.model_validate_json(report.model_dump_json())

    assert parsed.newest_files == ["gs://l/credit/day-2.csv#2"]
    assert parsed.candidate.scope("newest_files") == parsed.candidate.newest_files
    assert parsed.candidate.newest_files is not None
    assert parsed.candidate.newest_files.examples == 30
    assert parsed.baseline is not None
    assert parsed.baseline.scope("newest_files") is None
