"""Judging a candidate: every check, its value, threshold, tier and verdict.

Checks, in order:

1. ``infra``: the load-and-probe result exists and passed (always blocking: a model that
   cannot be loaded and called is never blessed, not even by the override).
2. ``baseline``: when a model is deployed, metrics.json must hold that model's metrics on
   the same eval split. Without them the change checks cannot run: the candidate is
   judged as on a first run, with a warning that says why.
3. For each configured threshold, overall and (``slices: true``) for each slice with at
   least ``min_slice_examples`` examples — the feature-value slices and ``newest_files``,
   the rows of the newest accepted files — or only the one slice it names
   (``slice: newest_files``): ``absolute`` checks of the candidate's value against
   ``lower_bound`` / ``upper_bound``, and a ``change`` check of its regression versus the
   deployed model (on the same rows) against ``max_regression``. A named slice that
   metrics.json does not have is a skipped check that says so.

Verdict: any failed blocking check → ``not_blessed``; else, with no baseline to compare
with and ``first_run: manual_approval`` → ``awaiting_approval``; else any failed warning
check → ``blessed_with_warnings``; else ``blessed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from cascade.core.evaluation_config import EvaluationConfig, MetricThreshold, Tier
from cascade.evaluation.inputs import (
    NEWEST_FILES_SLICE,
    OVERALL,
    EvaluationInputs,
    MetricValues,
    ModelMetricValues,
)

__all__ = ["CheckResult", "Judgement", "Verdict", "judge"]

Verdict = Literal[
    "blessed", "blessed_with_warnings", "not_blessed", "awaiting_approval", "force_blessed"
]
CheckKind = Literal["infra", "baseline", "absolute", "change"]
CheckVerdict = Literal["pass", "fail", "skipped"]
_TOLERANCE = 1e-12


class CheckResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: CheckKind
    tier: Tier
    verdict: CheckVerdict
    metric: str | None = None
    slice: str | None = None
    value: float | None = None
    baseline_value: float | None = None
    threshold: float | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    checks: list[CheckResult]
    first_run: bool

    def failures(self, tier: Tier) -> list[CheckResult]:
        return [check for check in self.checks if check.failed and check.tier == tier]


def judge(
    inputs: EvaluationInputs, config: EvaluationConfig, *, deployed_model_uri: str | None
) -> Judgement:
    """Apply ``config`` to the candidate; ``deployed_model_uri`` is what serves now, if any."""
    checks = [_infra_check(inputs)]
    baseline, baseline_checks = _baseline(inputs, deployed_model_uri)
    checks.extend(baseline_checks)
    for threshold in config.thresholds:
        checks.extend(_threshold_checks(threshold, inputs, baseline, config.min_slice_examples))
    first_run = baseline is None
    if any(check.failed and check.tier == "blocking" for check in checks):
        verdict: Verdict = "not_blessed"
    elif first_run and config.first_run == "manual_approval":
        verdict = "awaiting_approval"
    elif any(check.failed for check in checks):
        verdict = "blessed_with_warnings"
    else:
        verdict = "blessed"
    return Judgement(verdict=verdict, checks=checks, first_run=first_run)


def _infra_check(inputs: EvaluationInputs) -> CheckResult:
    infra = inputs.infra_check
    if infra is None:
        detail = inputs.infra_check_error or "no load-and-probe result"
        return CheckResult(
            name="load-and-probe", kind="infra", tier="blocking", verdict="fail", detail=detail
        )
    detail = "; ".join(infra.reasons) if infra.reasons else "loaded and answered every probe"
    if infra.passed and infra.latency is not None:
        detail += f" (single-row p95 {infra.latency.single_row_p95_ms:.2f} ms)"
    return CheckResult(
        name="load-and-probe",
        kind="infra",
        tier="blocking",
        verdict="pass" if infra.passed else "fail",
        detail=detail,
    )


def _baseline(
    inputs: EvaluationInputs, deployed_model_uri: str | None
) -> tuple[ModelMetricValues | None, list[CheckResult]]:
    """The deployed model's metrics to compare with, and the checks about them."""
    if deployed_model_uri is None:
        return None, []
    baseline = inputs.metrics.baseline
    if baseline is None:
        reason = inputs.metrics.baseline_error or "the trainer reported no baseline metrics"
        return None, [
            CheckResult(
                name="baseline metrics",
                kind="baseline",
                tier="warning",
                verdict="fail",
                detail=f"{deployed_model_uri} is deployed but was not evaluated on this eval "
                f"split ({reason}); judged as a first run",
            )
        ]
    current = baseline.model_uri.rstrip("/") == deployed_model_uri.rstrip("/")
    return baseline, [
        CheckResult(
            name="baseline is the deployed model",
            kind="baseline",
            tier="warning",
            verdict="pass" if current else "fail",
            detail=f"compared with {baseline.model_uri}"
            + ("" if current else f"; {deployed_model_uri} was deployed since"),
        )
    ]


def _scopes(
    threshold: MetricThreshold, candidate: ModelMetricValues
) -> Iterator[tuple[str, MetricValues | None]]:
    if threshold.slice is not None:
        yield threshold.slice, candidate.scope(threshold.slice)
        return
    yield OVERALL, candidate.overall
    if threshold.slices:
        for slice_values in candidate.slices:
            yield slice_values.name, slice_values
        if candidate.newest_files is not None:
            yield NEWEST_FILES_SLICE, candidate.newest_files


def _absent(scope: str) -> str:
    if scope == NEWEST_FILES_SLICE:
        return "metrics.json has no newest_files slice (the transform marked no newest files)"
    return f"metrics.json has no slice {scope}"


def _check(
    rule: MetricThreshold,
    scope: str,
    name: str,
    kind: CheckKind,
    verdict: CheckVerdict,
    **fields: Any,
) -> CheckResult:
    return CheckResult(
        name=name,
        kind=kind,
        verdict=verdict,
        metric=rule.metric_name,
        slice=scope,
        tier=rule.tier,
        **fields,
    )


def _threshold_checks(
    threshold: MetricThreshold,
    inputs: EvaluationInputs,
    baseline: ModelMetricValues | None,
    min_slice_examples: int,
) -> list[CheckResult]:
    checks = []
    metric = threshold.metric_name
    for scope, values in _scopes(threshold, inputs.metrics.candidate):
        name = f"{metric} ({scope})"
        if values is None:
            checks.append(
                _check(threshold, scope, name, "absolute", "skipped", detail=_absent(scope))
            )
            continue
        value = values.metrics.get(metric)
        if scope != OVERALL and values.examples < min_slice_examples:
            detail = f"{values.examples} examples < min_slice_examples {min_slice_examples}"
            checks.append(_check(threshold, scope, name, "absolute", "skipped", detail=detail))
        elif value is None and scope != OVERALL:
            detail = f"{metric} is undefined on this slice"
            checks.append(_check(threshold, scope, name, "absolute", "skipped", detail=detail))
        elif value is None:
            available = ", ".join(sorted(values.metrics)) or "none"
            detail = f"{metric} is not in metrics.json (available: {available})"
            checks.append(_check(threshold, scope, name, "absolute", "fail", detail=detail))
        else:
            checks.extend(_absolute_checks(threshold, value, scope))
            if threshold.max_regression is not None:
                checks.append(_change_check(threshold, value, scope, baseline))
    return checks


def _absolute_checks(threshold: MetricThreshold, value: float, scope: str) -> list[CheckResult]:
    checks = []
    metric = threshold.metric_name
    for bound, comparison in ((threshold.lower_bound, ">="), (threshold.upper_bound, "<=")):
        if bound is None:
            continue
        ok = value >= bound - _TOLERANCE if comparison == ">=" else value <= bound + _TOLERANCE
        name = f"{metric} {comparison} {bound:g} ({scope})"
        checks.append(
            _check(
                threshold,
                scope,
                name,
                "absolute",
                "pass" if ok else "fail",
                value=value,
                threshold=bound,
                detail=f"{metric} = {value:.6g}",
            )
        )
    return checks


def _change_check(
    threshold: MetricThreshold, value: float, scope: str, baseline: ModelMetricValues | None
) -> CheckResult:
    metric = threshold.metric_name
    allowed = threshold.max_regression or 0.0
    kind_of_limit = "relative" if threshold.relative else "absolute"
    name = f"{metric} regression <= {allowed:g} {kind_of_limit} ({scope})"
    if baseline is None:
        return _check(
            threshold,
            scope,
            name,
            "change",
            "skipped",
            value=value,
            detail="first run: no deployed model to compare with",
        )
    base_values = baseline.scope(scope)
    base_value = None if base_values is None else base_values.metrics.get(metric)
    if base_value is None:
        return _check(
            threshold,
            scope,
            name,
            "change",
            "skipped",
            value=value,
            detail="the deployed model has no value here",
        )
    regression = (base_value - value) if threshold.improves_upward else (value - base_value)
    limit = allowed * (abs(base_value) if threshold.relative else 1.0)
    ok = regression <= limit + _TOLERANCE
    detail = (
        f"{metric} {base_value:.6g} -> {value:.6g}: regression {regression:.6g} "
        f"{'<=' if ok else '>'} {limit:.6g} allowed"
    )
    return _check(
        threshold,
        scope,
        name,
        "change",
        "pass" if ok else "fail",
        value=value,
        baseline_value=base_value,
        threshold=limit,
        detail=detail,
    )
