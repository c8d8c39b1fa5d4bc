"""Thresholds, tiers, slices and the first-run policy, judged without any storage."""

from __future__ import annotations

from typing import Any

import pytest

from cascade.core.errors import InvalidConfigError
from cascade.core.evaluation_config import EvaluationConfig, MetricThreshold
from cascade.core.pipeline_config import parse_pipeline_config
from cascade.evaluation.inputs import EvaluationInputs, TrainedMetrics
from cascade.evaluation.policy import judge
from cascade.trainer.infra_check import InfraCheck
from tests.unit.evaluation.builders import (
    DEPLOYED_URI,
    MODEL_URI,
    infra_check,
    metrics_report,
    model_metrics,
)


def inputs(
    candidate: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    infra: InfraCheck | None = None,
    **extra: Any,
) -> EvaluationInputs:
    report = TrainedMetrics.model_validate(metrics_report(candidate, baseline, **extra))
    return EvaluationInputs(
        metrics=report,
        metrics_uri="gs://b/metrics.json",
        infra_check=infra if infra is not None else infra_check(),
        infra_check_uri="gs://b/infra_check.json",
        infra_check_error=None,
    )


def config(*thresholds: MetricThreshold, **fields: Any) -> EvaluationConfig:
    return EvaluationConfig(thresholds=list(thresholds), **fields)


AUC_FLOOR = MetricThreshold(metric="auc", tier="blocking", lower_bound=0.8)


def test_a_failed_blocking_bound_is_not_blessed() -> None:
    judged = judge(
        inputs(model_metrics(MODEL_URI, {"auc": 0.75})), config(AUC_FLOOR), deployed_model_uri=None
    )

    assert judged.verdict == "not_blessed"
    [check] = judged.failures("blocking")
    assert (check.metric, check.value, check.threshold, check.kind) == (
        "auc",
        0.75,
        0.8,
        "absolute",
    )
    assert check.name == "auc >= 0.8 (overall)"


def test_a_failed_warning_bound_is_blessed_with_a_warning() -> None:
    warning = MetricThreshold(metric="auc", tier="warning", lower_bound=0.9)

    judged = judge(
        inputs(model_metrics(MODEL_URI, {"auc": 0.85})),
        config(AUC_FLOOR, warning),
        deployed_model_uri=None,
    )

    assert judged.verdict == "blessed_with_warnings"
    assert [c.name for c in judged.failures("warning")] == ["auc >= 0.9 (overall)"]
    assert judged.failures("blocking") == []


def test_regression_versus_the_deployed_model_is_measured_in_the_harmful_direction() -> None:
    candidate = model_metrics(MODEL_URI, {"auc": 0.80, "loss": 0.46})
    baseline = model_metrics(DEPLOYED_URI, {"auc": 0.82, "loss": 0.40})
    rules = config(
        MetricThreshold(metric="auc", max_regression=0.03),  # 0.02 worse: passes
        MetricThreshold(metric="eval_loss", max_regression=0.10, relative=True),  # 15%: fails
    )

    judged = judge(inputs(candidate, baseline), rules, deployed_model_uri=DEPLOYED_URI)

    by_metric = {c.metric: c for c in judged.checks if c.kind == "change"}
    assert by_metric["auc"].verdict == "pass"
    assert by_metric["loss"].verdict == "fail"
    assert by_metric["loss"].baseline_value == 0.40
    assert by_metric["loss"].threshold == pytest.approx(0.04)
    assert judged.verdict == "not_blessed"
    assert not judged.first_run


def test_an_improvement_never_counts_as_a_regression() -> None:
    candidate = model_metrics(MODEL_URI, {"loss": 0.30})
    baseline = model_metrics(DEPLOYED_URI, {"loss": 0.40})

    judged = judge(
        inputs(candidate, baseline),
        config(MetricThreshold(metric="loss", max_regression=0.0)),
        deployed_model_uri=DEPLOYED_URI,
    )

    assert judged.verdict == "blessed"


def test_slices_are_judged_when_asked_and_small_slices_are_skipped() -> None:
    candidate = model_metrics(
        MODEL_URI,
        {"auc": 0.9},
        {
            "city=paris": (500, {"auc": 0.70}),
            "city=nice": (10, {"auc": 0.10}),  # too small to judge
            "city=lyon": (400, {"loss": 0.3}),  # auc undefined on this slice
        },
    )
    rule = MetricThreshold(metric="auc", tier="warning", lower_bound=0.8, slices=True)

    judged = judge(inputs(candidate), config(rule, min_slice_examples=30), deployed_model_uri=None)

    verdicts = {c.slice: c.verdict for c in judged.checks if c.metric == "auc"}
    assert verdicts == {
        "overall": "pass",
        "city=paris": "fail",
        "city=nice": "skipped",
        "city=lyon": "skipped",
    }
    assert judged.verdict == "blessed_with_warnings"


def test_slice_regression_compares_the_same_slice() -> None:
    candidate = model_metrics(MODEL_URI, {"auc": 0.9}, {"city=paris": (500, {"auc": 0.80})})
    baseline = model_metrics(DEPLOYED_URI, {"auc": 0.9}, {"city=paris": (500, {"auc": 0.86})})
    rule = MetricThreshold(metric="auc", max_regression=0.05, slices=True)

    judged = judge(inputs(candidate, baseline), config(rule), deployed_model_uri=DEPLOYED_URI)

    [failed] = judged.failures("blocking")
    assert (failed.slice, failed.baseline_value, failed.value) == ("city=paris", 0.86, 0.80)


def test_first_run_blesses_on_absolute_bounds_alone() -> None:
    rule = MetricThreshold(metric="auc", lower_bound=0.7, max_regression=0.01)

    judged = judge(
        inputs(model_metrics(MODEL_URI, {"auc": 0.75})), config(rule), deployed_model_uri=None
    )

    assert judged.first_run
    assert judged.verdict == "blessed"
    [change] = [c for c in judged.checks if c.kind == "change"]
    assert change.verdict == "skipped"
    assert "first run" in change.detail


def test_first_run_can_require_manual_approval() -> None:
    rule = MetricThreshold(metric="auc", lower_bound=0.7)
    strict = config(rule, first_run="manual_approval")

    first = judge(inputs(model_metrics(MODEL_URI, {"auc": 0.75})), strict, deployed_model_uri=None)
    failing = judge(inputs(model_metrics(MODEL_URI, {"auc": 0.6})), strict, deployed_model_uri=None)

    assert first.verdict == "awaiting_approval"
    assert failing.verdict == "not_blessed"  # a person approves only what passed


def test_a_failed_or_missing_probe_blocks_whatever_the_metrics() -> None:
    good = model_metrics(MODEL_URI, {"auc": 0.99})
    failed_probe = infra_check(passed=False, reasons=["missing_values: 1 non-finite values"])

    judged = judge(inputs(good, infra=failed_probe), config(AUC_FLOOR), deployed_model_uri=None)
    missing = EvaluationInputs(
        inputs(good).metrics,
        "m",
        None,
        "gs://b/infra_check.json",
        "gs://b/infra_check.json does not exist",
    )
    judged_missing = judge(missing, config(AUC_FLOOR), deployed_model_uri=None)

    assert judged.verdict == judged_missing.verdict == "not_blessed"
    assert judged.checks[0].kind == "infra"
    assert "non-finite" in judged.checks[0].detail
    assert "does not exist" in judged_missing.checks[0].detail


def test_a_deployed_model_without_baseline_metrics_is_judged_as_a_first_run() -> None:
    candidate = model_metrics(MODEL_URI, {"auc": 0.9})
    report = inputs(candidate, baseline_error="the deployed model needs input 'income'")

    judged = judge(
        report, config(AUC_FLOOR, first_run="manual_approval"), deployed_model_uri=DEPLOYED_URI
    )

    assert judged.first_run
    assert judged.verdict == "awaiting_approval"
    [baseline] = [c for c in judged.checks if c.kind == "baseline"]
    assert baseline.verdict == "fail"
    assert "needs input 'income'" in baseline.detail


def test_a_metric_the_problem_type_does_not_have_fails_in_its_tier() -> None:
    judged = judge(
        inputs(model_metrics(MODEL_URI, {"loss": 0.4})), config(AUC_FLOOR), deployed_model_uri=None
    )

    [failed] = judged.failures("blocking")
    assert "auc is not in metrics.json (available: loss)" in failed.detail


def test_the_default_policy_blocks_a_loss_regression_over_five_percent() -> None:
    candidate = model_metrics(MODEL_URI, {"loss": 0.43})
    baseline = model_metrics(DEPLOYED_URI, {"loss": 0.40})

    judged = judge(inputs(candidate, baseline), EvaluationConfig(), deployed_model_uri=DEPLOYED_URI)

    assert judged.verdict == "not_blessed"


def test_the_pipeline_config_carries_evaluation_and_deployment_sections() -> None:
    text = """
evaluation:
  first_run: manual_approval
  thresholds:
    - {metric: auc, tier: blocking, lower_bound: 0.7, max_regression: 0.01, slices: true}
deployment:
  canary_traffic_percent: 25
  keep_versions: 3
"""
    parsed = parse_pipeline_config(text, where="pipeline.yaml")

    assert parsed.evaluation.first_run == "manual_approval"
    assert parsed.evaluation.thresholds[0].slices
    assert parsed.deployment.canary_traffic_percent == 25
    with pytest.raises(InvalidConfigError, match="sets no bound"):
        parse_pipeline_config("evaluation: {thresholds: [{metric: auc}]}", where="p.yaml")
    with pytest.raises(InvalidConfigError, match="min_replicas"):
        parse_pipeline_config("deployment: {min_replicas: 3, max_replicas: 1}", where="p.yaml")


def _with_newest(
    metrics: dict[str, Any], examples: int, values: dict[str, float]
) -> dict[str, Any]:
    return {**metrics, "newest_files": {"examples": examples, "metrics": values}}


NEWEST_RULE = MetricThreshold(
    metric="loss", tier="blocking", max_regression=0.02, relative=True, slice="newest_files"
)


def test_a_candidate_worse_on_the_newest_files_is_rejected_when_the_config_requires_it() -> None:
    candidate = _with_newest(model_metrics(MODEL_URI, {"loss": 0.40}), 200, {"loss": 0.60})
    baseline = _with_newest(model_metrics(DEPLOYED_URI, {"loss": 0.40}), 200, {"loss": 0.50})

    judged = judge(
        inputs(candidate, baseline), config(NEWEST_RULE), deployed_model_uri=DEPLOYED_URI
    )

    [failed] = judged.failures("blocking")
    assert (failed.slice, failed.kind) == ("newest_files", "change")
    assert (failed.value, failed.baseline_value) == (0.60, 0.50)
    assert judged.verdict == "not_blessed"
    assert not any(check.slice == "overall" for check in judged.checks if check.metric == "loss")


def test_a_candidate_that_adapts_to_the_newest_files_passes_that_requirement() -> None:
    candidate = _with_newest(model_metrics(MODEL_URI, {"loss": 0.41}), 200, {"loss": 0.35})
    baseline = _with_newest(model_metrics(DEPLOYED_URI, {"loss": 0.40}), 200, {"loss": 0.70})

    judged = judge(
        inputs(candidate, baseline), config(NEWEST_RULE), deployed_model_uri=DEPLOYED_URI
    )

    [check] = [c for c in judged.checks if c.slice == "newest_files"]
    assert check.verdict == "pass"
    assert judged.verdict == "blessed"


def test_a_required_newest_files_slice_that_is_absent_or_small_is_skipped_saying_why() -> None:
    absent = judge(
        inputs(model_metrics(MODEL_URI, {"loss": 0.4}), model_metrics(DEPLOYED_URI, {"loss": 0.4})),
        config(NEWEST_RULE),
        deployed_model_uri=DEPLOYED_URI,
    )
    small = judge(
        inputs(_with_newest(model_metrics(MODEL_URI, {"loss": 0.4}), 5, {"loss": 0.9})),
        config(NEWEST_RULE, min_slice_examples=30),
        deployed_model_uri=None,
    )

    [absent_check] = [c for c in absent.checks if c.slice == "newest_files"]
    assert absent_check.verdict == "skipped"
    assert "no newest_files slice" in absent_check.detail
    [small_check] = [c for c in small.checks if c.slice == "newest_files"]
    assert small_check.verdict == "skipped"
    assert "5 examples" in small_check.detail


def test_the_default_policy_warns_about_a_regression_on_the_newest_files() -> None:
    candidate = _with_newest(model_metrics(MODEL_URI, {"loss": 0.40}), 200, {"loss": 0.60})
    baseline = _with_newest(model_metrics(DEPLOYED_URI, {"loss": 0.40}), 200, {"loss": 0.50})

    judged = judge(inputs(candidate, baseline), EvaluationConfig(), deployed_model_uri=DEPLOYED_URI)

    [warning] = judged.failures("warning")
    assert (warning.slice, warning.metric, warning.kind) == ("newest_files", "loss", "change")
    assert judged.verdict == "blessed_with_warnings"


def test_a_threshold_can_name_a_feature_value_slice() -> None:
    candidate = model_metrics(MODEL_URI, {"auc": 0.9}, {"city=paris": (500, {"auc": 0.70})})
    rule = MetricThreshold(metric="auc", lower_bound=0.8, slice="city=paris")

    judged = judge(inputs(candidate), config(rule), deployed_model_uri=None)

    [failed] = judged.failures("blocking")
    assert failed.slice == "city=paris"


def test_a_threshold_cannot_name_one_slice_and_ask_for_every_slice() -> None:
    with pytest.raises(ValueError, match="give one of them"):
        MetricThreshold(metric="loss", max_regression=0.1, slice="newest_files", slices=True)


def test_the_pipeline_config_takes_a_newest_files_threshold() -> None:
    text = """
evaluation:
  thresholds:
    - metric: loss
      tier: blocking
      max_regression: 0.02
      relative: true
      slice: newest_files
"""
    parsed = parse_pipeline_config(text, where="pipeline.yaml")

    assert parsed.evaluation.thresholds == [NEWEST_RULE]
