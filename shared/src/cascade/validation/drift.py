"""Distances between the baseline's distribution of a feature and a new file's.

Numeric features are compared on the aligned histograms (``histogram.py``) of both
sides, brought to one grid (the coarser of the two scales; grids nest, so no count is
split). Counts are exact at every bin edge of that grid, and just above zero (the exact
number of zeros is known), so the measures are read there and nothing is spread:

- ``ks_statistic``: the two-sample Kolmogorov-Smirnov statistic, the largest difference
  between the two cumulative distributions. Read at the exact points it is a lower bound
  of the statistic of the raw values, which exceeds it by at most the largest share one
  bin holds on either side (``KsStatistic.error_bound``; zero for integers at scale 0).
- ``jensen_shannon_divergence``: TFDV's formula (base 2, 0..1) over buckets of whole
  bins cut at the baseline's quantiles, with a bucket of its own for any bin holding
  more than 1/bins of the baseline (a point mass stays a point) and for what lies below
  or above all the baseline's bins (so a constant baseline still sees a move either way).

Categorical features: L-infinity distance, the largest change in any value's share
(TFDV's definition). Plus the sampling-noise floors that keep a small file's chance
differences from reading as drift, and the share of a file's strings unseen in the
baseline next to what the baseline itself predicts (Good-Turing).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from statistics import NormalDist

from cascade.validation.summaries import NumericSummary

__all__ = [
    "KsStatistic",
    "UnseenShare",
    "drift_boundaries",
    "jensen_shannon_divergence",
    "ks_noise_floor",
    "ks_statistic",
    "l_infinity_distance",
    "magnitude_ratio",
    "proportion_noise_floor",
    "shares",
    "unseen_share",
]

_ZERO_POINT = 0
"""Position of the exact zeros; the rest of bin ``k`` is at ``2k + 1`` (see ``_positions``)."""


def _positions(numeric: NumericSummary, scale: int) -> dict[int, int]:
    """Counts by ordered position on the grid of ``scale``.

    Bin ``k``'s values are at position ``2k + 1``, except bin 0's exact zeros, at
    position 0 (between bin -1 and the rest of bin 0). The boundary after each position
    is a bin edge or "just above zero": the cumulative count there is exact.
    """
    histogram = numeric.histogram.coarsened(scale)
    positions: dict[int, int] = {}
    for key, count in histogram.counts.items():
        zeros = min(numeric.zeros, count) if key == 0 else 0
        if zeros:
            positions[_ZERO_POINT] = zeros
        if count > zeros:
            positions[2 * key + 1] = count - zeros
    return positions


def _common_scale(baseline: NumericSummary, current: NumericSummary) -> int:
    return max(baseline.histogram.scale, current.histogram.scale)


def _points(numeric: NumericSummary, scale: int) -> bool:
    """Each bin holds one value at ``scale``: the cumulative count is exact inside it."""
    return numeric.histogram.integers and scale <= 0


def _position_value(position: int, scale: int) -> float:
    """The lower edge of the values at ``position`` (``_positions``)."""
    return math.ldexp(float(position // 2), scale)


@dataclass(frozen=True)
class KsStatistic:
    """``value``: the largest CDF difference at the exact points (a lower bound);
    the raw values' statistic is at most ``value + error_bound``; ``at``: where."""

    value: float
    error_bound: float
    at: float


def _disjoint(baseline: NumericSummary, current: NumericSummary) -> bool:
    return current.maximum < baseline.minimum or current.minimum > baseline.maximum


def ks_statistic(baseline: NumericSummary, current: NumericSummary) -> KsStatistic:
    """Two-sample Kolmogorov-Smirnov statistic of the finite values (0 when a side has none)."""
    total_b, total_c = baseline.histogram.total, current.histogram.total
    if not total_b or not total_c:
        return KsStatistic(0.0, 0.0, math.nan)
    if _disjoint(baseline, current):
        at = current.maximum if current.maximum < baseline.minimum else baseline.maximum
        return KsStatistic(1.0, 0.0, at)
    scale = _common_scale(baseline, current)
    old, new = _positions(baseline, scale), _positions(current, scale)
    old_points, new_points = _points(baseline, scale), _points(current, scale)
    seen_b = seen_c = 0
    worst, worst_at, bound = 0.0, math.nan, 0.0
    for position in sorted(old.keys() | new.keys()):
        count_b, count_c = old.get(position, 0), new.get(position, 0)
        if position != _ZERO_POINT:
            spread_b = 0.0 if old_points else count_b / total_b
            spread_c = 0.0 if new_points else count_c / total_c
            bound = max(bound, spread_b, spread_c)
        seen_b += count_b
        seen_c += count_c
        difference = abs(seen_b / total_b - seen_c / total_c)
        if difference > worst:
            worst = difference
            worst_at = _position_value(position + 1, scale) if position else 0.0
    return KsStatistic(worst, min(bound, 1.0 - worst), worst_at)


def ks_noise_floor(count_b: int, count_c: int, significance: float) -> float:
    """The KS statistic two samples of these sizes from one distribution exceed with
    probability ``significance`` (asymptotic: c(a) * sqrt((n + m) / (n m)))."""
    if not count_b or not count_c:
        return 1.0
    coefficient = math.sqrt(-math.log(significance / 2) / 2)
    return coefficient * math.sqrt((count_b + count_c) / (count_b * count_c))


def proportion_noise_floor(
    share_b: float, count_b: int, share_c: float, count_c: int, significance: float
) -> float:
    """The change in a share that two samples from one population exceed with
    probability ``significance`` (two-sided, pooled two-proportion z test)."""
    if not count_b or not count_c:
        return 1.0
    pooled = (share_b * count_b + share_c * count_c) / (count_b + count_c)
    z = NormalDist().inv_cdf(1 - significance / 2)
    return z * math.sqrt(pooled * (1 - pooled) * (1 / count_b + 1 / count_c))


def _bucket_starts(positions: dict[int, int], bins: int) -> list[int]:
    """Positions where a bucket starts: the baseline's quantiles, cut at whole positions.

    The first bucket holds what lies below the baseline, the last what lies above it;
    a position holding 1/bins of the baseline or more is a bucket by itself.
    """
    ordered = sorted(positions)
    total = sum(positions.values())
    starts = {ordered[0], ordered[-1] + 1}
    seen, target = 0, 1
    for position in ordered:
        count = positions[position]
        heavy = count * bins >= total
        if heavy:
            starts.add(position)
        seen += count
        if heavy or seen * bins >= target * total:
            starts.add(position + 1)
        while target < bins and seen * bins >= target * total:
            target += 1
    return sorted(starts)


def _bucketed(positions: dict[int, int], starts: list[int]) -> list[float]:
    buckets = [0.0] * (len(starts) + 1)
    for position, count in positions.items():
        buckets[bisect.bisect_right(starts, position)] += count
    total = sum(buckets)
    return [bucket / total for bucket in buckets]


def _kl_to_mixture(p: list[float], mixture: list[float]) -> float:
    return sum(pi * math.log2(pi / mi) for pi, mi in zip(p, mixture, strict=True) if pi > 0)


def jensen_shannon_divergence(
    baseline: NumericSummary, current: NumericSummary, bins: int
) -> float:
    """JS divergence of the two value distributions; 0 when either side has no values."""
    if not baseline.histogram.total or not current.histogram.total:
        return 0.0
    scale = _common_scale(baseline, current)
    old, new = _positions(baseline, scale), _positions(current, scale)
    starts = _bucket_starts(old, bins)
    p, q = _bucketed(old, starts), _bucketed(new, starts)
    mixture = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]
    divergence = (_kl_to_mixture(p, mixture) + _kl_to_mixture(q, mixture)) / 2
    return min(max(divergence, 0.0), 1.0)


def drift_boundaries(baseline: NumericSummary, bins: int) -> list[float]:
    """Inner boundaries of the Jensen-Shannon buckets of ``baseline`` on its own grid
    (the zeros' bucket merged with the rest of its bin): for showing them."""
    if not baseline.histogram.total:
        return []
    scale = baseline.histogram.scale
    starts = _bucket_starts(_positions(baseline, scale), bins)
    return sorted({_position_value(start, scale) for start in starts})


def shares(numeric: NumericSummary, boundaries: list[float]) -> list[float]:
    """Share of finite values in each bucket the boundaries cut (sums to 1)."""
    masses = numeric.histogram.masses(
        boundaries, numeric.minimum, numeric.maximum, zeros=numeric.zeros
    )
    total = sum(masses)
    return [mass / total for mass in masses] if total else [0.0 for _ in masses]


def magnitude_ratio(baseline: NumericSummary, current: NumericSummary) -> float:
    """How many times larger (>= 1, either way) the current values' typical magnitude is:
    the larger absolute 5th/95th percentile, so one row's extreme does not count."""

    def magnitude(numeric: NumericSummary) -> float:
        low, high = numeric.histogram.quantiles(
            [0.05, 0.95], numeric.minimum, numeric.maximum, zeros=numeric.zeros
        )
        return max(abs(low), abs(high))

    if not baseline.histogram.total or not current.histogram.total:
        return 1.0
    old, new = magnitude(baseline), magnitude(current)
    if old == new:
        return 1.0
    if old == 0 or new == 0:
        return math.inf
    return max(old / new, new / old)


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


@dataclass(frozen=True)
class UnseenShare:
    """``share``: of the file's values, those not among the baseline's (a lower bound
    when ``lower_bound``: the file's counts were truncated); ``expected``: the share the
    baseline predicts (Good-Turing: its values seen once / its values)."""

    share: float
    expected: float
    lower_bound: bool


def unseen_share(
    baseline_counts: dict[str, int], current_counts: dict[str, int], current_values: int
) -> UnseenShare:
    """Needs the baseline's complete value counts (not truncated): the caller checks.

    ``current_values`` is the file's number of values; counts it does not list (the
    file's own counts truncated) may or may not be unseen, so only a lower bound is known.
    """
    baseline_total = sum(baseline_counts.values())
    listed = sum(current_counts.values())
    if not baseline_total or not current_values:
        return UnseenShare(0.0, 0.0, lower_bound=False)
    unseen = sum(count for value, count in current_counts.items() if value not in baseline_counts)
    singletons = sum(1 for count in baseline_counts.values() if count == 1)
    return UnseenShare(
        share=unseen / current_values,
        expected=singletons / baseline_total,
        lower_bound=listed < current_values,
    )
