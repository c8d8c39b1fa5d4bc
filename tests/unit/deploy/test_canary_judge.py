"""Judging a canary's smoke predictions: the error rate and the p95 latency, each against
the dataset's limit (a value at the limit passes; only one over it fails)."""

from __future__ import annotations

import pytest

from cascade.core.deployment_config import DeploymentConfig
from cascade.deploy.canary import judge_canary, percentile
from cascade.deploy.deployer import CanaryReport

LIMITS = DeploymentConfig(canary_max_error_rate=0.05, canary_max_latency_ms=250.0)


def _latencies(typical: float, *slow: float, count: int = 20) -> list[float]:
    """``count`` request latencies: the slow ones last, the rest ``typical``."""
    return [typical] * (count - len(slow)) + list(slow)


def test_a_canary_within_both_limits_passes_and_reports_its_requests() -> None:
    report = judge_canary(LIMITS, 0, _latencies(40.0, 120.0), "", answered_by_canary=17)

    assert report == CanaryReport(
        passed=True,
        requests=20,
        errors=0,
        p95_ms=40.0,
        detail="20 requests answered, p95 40.0 ms",
        answered_by_canary=17,
    )


def test_a_p95_latency_over_the_limit_fails_the_canary() -> None:
    report = judge_canary(LIMITS, 0, _latencies(250.5), "", answered_by_canary=20)

    assert not report.passed
    assert report.p95_ms == 250.5
    assert report.detail == "p95 latency 250.5 ms > 250 ms"


def test_a_p95_latency_at_the_limit_passes() -> None:
    report = judge_canary(LIMITS, 0, _latencies(250.0), "", answered_by_canary=20)

    assert report.passed
    assert report.p95_ms == 250.0


def test_the_p95_ignores_one_slow_request_in_twenty_but_not_two() -> None:
    one = judge_canary(LIMITS, 0, _latencies(40.0, 5000.0), "", answered_by_canary=20)
    two = judge_canary(LIMITS, 0, _latencies(40.0, 4000.0, 5000.0), "", answered_by_canary=20)

    assert (one.passed, one.p95_ms) == (True, 40.0)
    assert (two.passed, two.p95_ms) == (False, 4000.0)
    assert two.detail == "p95 latency 4000.0 ms > 250 ms"


def test_an_error_rate_over_the_limit_fails_the_canary_naming_the_last_error() -> None:
    report = judge_canary(LIMITS, 2, _latencies(40.0), "HTTP 503: busy", answered_by_canary=18)

    assert not report.passed
    assert report.errors == 2
    assert report.detail == "2/20 requests failed (at most 5% allowed); last: HTTP 503: busy"


def test_an_error_rate_at_the_limit_passes() -> None:
    report = judge_canary(LIMITS, 1, _latencies(40.0), "HTTP 503: busy", answered_by_canary=19)

    assert report.passed
    assert report.detail == "20 requests answered, p95 40.0 ms"


def test_by_default_a_single_failed_request_fails_the_canary() -> None:
    report = judge_canary(DeploymentConfig(), 1, _latencies(40.0), "timeout", answered_by_canary=19)

    assert not report.passed
    assert report.detail == "1/20 requests failed (at most 0% allowed); last: timeout"


def test_a_slow_and_failing_canary_gives_both_reasons() -> None:
    report = judge_canary(LIMITS, 3, _latencies(300.0), "HTTP 500: boom", answered_by_canary=0)

    assert not report.passed
    assert report.detail == (
        "3/20 requests failed (at most 5% allowed); last: HTTP 500: boom; "
        "p95 latency 300.0 ms > 250 ms"
    )


def test_a_canary_that_sent_no_requests_fails() -> None:
    report = judge_canary(LIMITS, 0, [], "", answered_by_canary=0)

    assert not report.passed
    assert (report.requests, report.p95_ms) == (0, 0.0)
    assert report.detail.startswith("0/0 requests failed")


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.95, 0.0),
        ([7.0], 0.95, 7.0),
        ([5.0, 1.0, 3.0, 2.0, 4.0], 0.5, 3.0),
        ([5.0, 1.0, 3.0, 2.0, 4.0], 0.95, 5.0),
        ([5.0, 1.0, 3.0, 2.0, 4.0], 0.0, 1.0),
        ([float(n) for n in range(1, 21)], 0.95, 19.0),
    ],
)
def test_percentile_is_the_nearest_rank_of_the_sorted_values(
    values: list[float], fraction: float, expected: float
) -> None:
    assert percentile(values, fraction) == expected
