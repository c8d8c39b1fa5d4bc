"""Judging a canary's smoke predictions (both deployers)."""

from __future__ import annotations

from cascade.core.deployment_config import DeploymentConfig
from cascade.deploy.deployer import CanaryReport

__all__ = ["judge_canary", "percentile"]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def judge_canary(
    config: DeploymentConfig,
    errors: int,
    latencies: list[float],
    last_error: str,
    *,
    answered_by_canary: int,
) -> CanaryReport:
    """Pass when the error rate and the p95 latency are within the config's limits."""
    requests_sent = len(latencies)
    p95 = percentile(latencies, 0.95)
    error_rate = errors / requests_sent if requests_sent else 1.0
    reasons = []
    if error_rate > config.canary_max_error_rate:
        reasons.append(
            f"{errors}/{requests_sent} requests failed (at most "
            f"{config.canary_max_error_rate:.0%} allowed); last: {last_error}"
        )
    if p95 > config.canary_max_latency_ms:
        reasons.append(f"p95 latency {p95:.1f} ms > {config.canary_max_latency_ms:g} ms")
    detail = "; ".join(reasons) or f"{requests_sent} requests answered, p95 {p95:.1f} ms"
    return CanaryReport(
        passed=not reasons,
        requests=requests_sent,
        errors=errors,
        p95_ms=p95,
        detail=detail,
        answered_by_canary=answered_by_canary,
    )
