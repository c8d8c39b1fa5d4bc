"""Distances between the baseline's distribution of a feature and a new file's.

Numeric features: Jensen-Shannon divergence (base 2, 0..1) over buckets cut at the
baseline's quantiles, so each baseline bucket holds about the same share and an
outlier cannot squeeze the bulk of the data into one bucket. Categorical features:
L-infinity distance, the largest change in any value's share (TFDV's definition).
"""

from __future__ import annotations

import math

from cascade.validation.summaries import NumericSummary

__all__ = ["drift_boundaries", "jensen_shannon_divergence", "l_infinity_distance", "shares"]


def drift_boundaries(baseline: NumericSummary, bins: int) -> list[float]:
    """Distinct inner bucket boundaries at the baseline's 1/bins .. (bins-1)/bins quantiles."""
    if not baseline.count:
        return []
    fractions = [index / bins for index in range(1, bins)]
    points = baseline.histogram.quantiles(fractions, baseline.minimum, baseline.maximum)
    return sorted(set(points))


def shares(numeric: NumericSummary, boundaries: list[float]) -> list[float]:
    """Share of finite values in each bucket the boundaries cut (sums to 1)."""
    masses = numeric.histogram.masses(boundaries, numeric.minimum, numeric.maximum)
    total = sum(masses)
    return [mass / total for mass in masses] if total else [0.0 for _ in masses]


def _kl_to_mixture(p: list[float], mixture: list[float]) -> float:
    return sum(pi * math.log2(pi / mi) for pi, mi in zip(p, mixture, strict=True) if pi > 0)


def jensen_shannon_divergence(
    baseline: NumericSummary, current: NumericSummary, bins: int
) -> float:
    """JS divergence of the two value distributions; 0 when either side has no values."""
    if not baseline.count or not current.count:
        return 0.0
    boundaries = drift_boundaries(baseline, bins)
    p, q = shares(baseline, boundaries), shares(current, boundaries)
    mixture = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]
    divergence = (_kl_to_mixture(p, mixture) + _kl_to_mixture(q, mixture)) / 2
    return min(max(divergence, 0.0), 1.0)


def l_infinity_distance(
    baseline_counts: dict[str, int], current_counts: dict[str, int]
) -> tuple[float, str]:
    """The largest absolute change in a value's share, and the value it happens for."""
    baseline_total = sum(baseline_counts.values())
    current_total = sum(current_counts.values())
    if not baseline_total or not current_total:
        return 0.0, ""
    worst, worst_value = 0.0, ""
    for value in sorted(set(baseline_counts) | set(current_counts)):
        change = abs(
            baseline_counts.get(value, 0) / baseline_total
            - current_counts.get(value, 0) / current_total
        )
        if change > worst:
            worst, worst_value = change, value
    return worst, worst_value
