"""TFDV's drift comparators, re-implemented line for line, on TFDV's own statistics.

Sources (tensorflow/data-validation, read for this port):

- ``tensorflow_data_validation/statistics/generators/basic_stats_generator.py``
  (``_make_numeric_stats_proto``): the STANDARD histogram of a numeric feature has
  ``num_histogram_buckets`` (10) equal-width buckets from the finite minimum to the
  finite maximum, filled from ``_NUM_QUANTILES_FACTOR_FOR_STD_HISTOGRAM`` (100) x
  ``num_quantiles_histogram_buckets`` (10) = 1,000 quantiles of a KLL sketch;
  ``num_nan`` is kept beside it.
- ``tensorflow_data_validation/utils/quantiles_util.py``: ``_get_bin_weights``,
  ``generate_quantiles_histogram``, ``_overlap`` and ``generate_equi_width_histogram``
  (quantile intervals spread evenly over their width, point intervals kept whole).
- ``tensorflow_data_validation/anomalies/metrics.cc``: ``JensenShannonDivergence``
  (``AlignHistograms`` on the union of both histograms' boundaries, with a repeated
  boundary for a single-value histogram; ``RebucketHistogram`` spreading each bucket
  evenly over its width; a NaN bucket when either side has NaNs; both normalised;
  (KL(P||M) + KL(Q||M)) / 2 with log2, terms with p, q > 0) and ``LInftyDistance``
  (the largest absolute difference of the normalised counts of the rank histogram).
- ``tensorflow_data_validation/anomalies/feature_util.cc``: an anomaly when the
  JSD exceeds ``jensen_shannon_divergence.threshold`` or the L-infinity distance
  exceeds ``infinity_norm.threshold`` (strictly above); a feature without a standard
  histogram on either side (no values) gets no JSD and no anomaly.
- ``StatsOptions``: ``num_rank_histogram_buckets`` 1,000: the L-infinity distance sees
  the 1,000 most frequent values of each side.

The one deviation: quantiles are exact (computed from the sorted values) where TFDV's
KLL sketch is approximate (rank error about 1/1000 at these sizes).
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "NUM_HISTOGRAM_BUCKETS",
    "Histogram",
    "jensen_shannon",
    "l_infinity",
    "rank_counts",
    "standard_histogram",
]

NUM_HISTOGRAM_BUCKETS = 10
NUM_QUANTILES = 100 * 10
RANK_HISTOGRAM_BUCKETS = 1000
Bucket = tuple[float, float, float]  # low_value, high_value, sample_count


class Histogram:
    """A TFMD STANDARD histogram: buckets and ``num_nan``."""

    def __init__(self, buckets: list[Bucket], num_nan: int = 0) -> None:
        self.buckets = buckets
        self.num_nan = num_nan


# --- statistics generation (quantiles_util.py) -------------------------------------


def _quantiles(values: np.ndarray, num_quantiles: int) -> tuple[np.ndarray, np.ndarray]:
    """``GetQuantilesAndCumulativeWeights``, exact: the minimum, the i/N quantiles, the
    maximum, and the number of values at or below each."""
    ordered = np.sort(values)
    n = ordered.size
    ranks = np.ceil(np.arange(num_quantiles + 1) * n / num_quantiles).astype(np.int64) - 1
    quantiles = ordered[np.clip(ranks, 0, n - 1)]
    cumulative = np.searchsorted(ordered, quantiles, side="right").astype(np.float64)
    return quantiles, cumulative


def _get_bin_weights(
    boundaries: np.ndarray, cum_bin_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cum_bin_weights = cum_bin_weights.astype(np.float64)
    low_bounds = boundaries[:-1]
    high_bounds = boundaries[1:]
    bin_counts = np.diff(cum_bin_weights)
    i = 0
    while i < low_bounds.size:
        j = i + 1
        for j in range(i + 1, low_bounds.size + 1):
            if j == low_bounds.size:
                break
            if high_bounds[i] != high_bounds[j]:
                break
        if j > i + 1:
            bin_counts[i:j] = bin_counts[i:j].sum() / (j - i)
        i = j
    i = 0
    for i in range(low_bounds.size + 1):
        if i == low_bounds.size:
            break
        if low_bounds[0] != low_bounds[i] or high_bounds[0] != high_bounds[i]:
            break
    if i > 0:
        bin_counts[0:i] += cum_bin_weights[0] / i
    return low_bounds, high_bounds, bin_counts


def _overlap(
    bucket: Bucket, low_bound: float, high_bound: float, first_bucket: bool
) -> tuple[float, bool, bool]:
    low, high, _ = bucket
    if first_bucket and high == low == low_bound:
        return 1.0, False, False
    if not first_bucket and high == low == low_bound:
        return 0.0, True, False
    if high < low_bound:
        return 0.0, True, False
    if low > high_bound:
        return 0.0, False, True
    if low_bound <= low and high_bound >= high:
        return 1.0, False, False
    if low_bound <= low:
        return (high_bound - low) / (high - low), False, False
    if high_bound >= high:
        return (high - low_bound) / (high - low), False, False
    return (high_bound - low_bound) / (high - low), False, False


def standard_histogram(values: np.ndarray, num_nan: int = 0) -> Histogram | None:
    """``generate_equi_width_histogram`` over the quantiles of the finite ``values``;
    None when there are none (TFDV then writes no STANDARD histogram buckets)."""
    if not values.size:
        return None
    quantiles, cumulative = _quantiles(values, NUM_QUANTILES)
    buckets = equi_width_buckets(
        quantiles, cumulative, float(values.min()), float(values.max()), NUM_HISTOGRAM_BUCKETS
    )
    return Histogram(buckets, num_nan)


def equi_width_buckets(
    quantiles: np.ndarray,
    cumulative: np.ndarray,
    finite_min: float,
    finite_max: float,
    num_buckets: int,
) -> list[Bucket]:
    """``generate_equi_width_histogram`` for finite values (no infinities here)."""
    lows, highs, weights = _get_bin_weights(quantiles, cumulative)
    quantile_buckets = [
        (float(lo), float(hi), float(w)) for lo, hi, w in zip(lows, highs, weights, strict=True)
    ]
    if finite_min == finite_max:
        boundaries = [finite_min, finite_max]
    else:
        boundaries = [float(b) for b in np.linspace(finite_min, finite_max, num_buckets + 1)]
    buckets: list[Bucket] = []
    start_index = 0
    for i in range(len(boundaries) - 1):
        low_bound, high_bound = boundaries[i], boundaries[i + 1]
        sample_count = 0.0
        for current_index in range(start_index, len(quantile_buckets)):
            overlap, precedes, follows = _overlap(
                quantile_buckets[current_index], low_bound, high_bound, first_bucket=i == 0
            )
            if follows:
                break
            if precedes:
                start_index = current_index
            sample_count += overlap * quantile_buckets[current_index][2]
        buckets.append((low_bound, high_bound, sample_count))
    return buckets


# --- comparators (metrics.cc) ------------------------------------------------------


def _boundaries(histogram: Histogram) -> set[float]:
    found: set[float] = set()
    for low, high, _ in histogram.buckets:
        found.add(low)
        found.add(high)
    return found


def _add_single_value_boundary(
    histogram_boundaries: set[float], histogram: Histogram, boundaries: list[float]
) -> None:
    if len(histogram_boundaries) != 1:
        return
    value = histogram.buckets[0][0]
    boundaries.insert(bisect.bisect_right(boundaries, value), value)


def _add_buckets(
    bucket_boundaries: list[float], total: float, total_range: float, out: list[Bucket]
) -> None:
    for i in range(len(bucket_boundaries) - 1):
        width = bucket_boundaries[i + 1] - bucket_boundaries[i]
        out.append((bucket_boundaries[i], bucket_boundaries[i + 1], width / total_range * total))


def _rebucket(boundaries: list[float], histogram: Histogram) -> None:
    out: list[Bucket] = []
    max_index = len(boundaries) - 1
    index = 0
    for low, high, count in histogram.buckets:
        while low > boundaries[index]:
            if index + 1 > max_index:
                raise AssertionError("CHECK_LE(index + 1, max_boundaries_index) failed")
            out.append((boundaries[index], boundaries[index + 1], 0.0))
            index += 1
        if low == high and low == boundaries[index]:
            out.append((boundaries[index], boundaries[index + 1], count))
            index += 1
            continue
        covered: list[float] = []
        while high > boundaries[index]:
            covered.append(boundaries[index])
            index += 1
        covered.append(boundaries[index])
        if len(covered) > 1:
            _add_buckets(covered, count, high - low, out)
    for i in range(index, max_index):
        out.append((boundaries[i], boundaries[i + 1], 0.0))
    histogram.buckets = out


def _align(first: Histogram, second: Histogram) -> None:
    first_boundaries, second_boundaries = _boundaries(first), _boundaries(second)
    if first_boundaries == second_boundaries:
        return
    boundaries = sorted(first_boundaries | second_boundaries)
    _add_single_value_boundary(first_boundaries, first, boundaries)
    _add_single_value_boundary(second_boundaries, second, boundaries)
    _rebucket(boundaries, first)
    _rebucket(boundaries, second)


def _normalized(histogram: Histogram) -> list[float]:
    total = sum(count for _, _, count in histogram.buckets)
    if total == 0:
        raise ValueError("Unable to normalize an empty histogram")
    return [count / total for _, _, count in histogram.buckets]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log2(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0 and qi > 0)


def jensen_shannon(first: Histogram | None, second: Histogram | None) -> float | None:
    """TFDV's approximate JSD; None where TFDV computes none (a side without values)."""
    if first is None or second is None:
        return None
    a = Histogram(list(first.buckets), first.num_nan)
    b = Histogram(list(second.buckets), second.num_nan)
    _align(a, b)
    if a.num_nan > 0 or b.num_nan > 0:
        a.buckets.append((math.nan, math.nan, float(a.num_nan)))
        b.buckets.append((math.nan, math.nan, float(b.num_nan)))
    try:
        p, q = _normalized(a), _normalized(b)
    except ValueError:
        return None
    mixture = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]
    return (_kl(p, mixture) + _kl(q, mixture)) / 2


def rank_counts(column: pa.ChunkedArray) -> dict[str, float]:
    """The rank histogram TFDV writes: the 1,000 most frequent values and their counts."""
    values = column.drop_null().cast(pa.string())
    if not len(values):
        return {}
    counted = pc.value_counts(values)
    pairs = sorted(
        zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True),
        key=lambda pair: (-pair[1], pair[0]),
    )
    return {value: float(count) for value, count in pairs[:RANK_HISTOGRAM_BUCKETS]}


def _normalize(counts: dict[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {key: value / total for key, value in counts.items()} if total else {}


def l_infinity(first: dict[str, float], second: dict[str, float]) -> tuple[float, str]:
    """``LInftyDistance``: the largest change in a value's share, and that value."""
    a, b = _normalize(first), _normalize(second)
    best_key, best = "", 0.0
    for key in sorted(a.keys() | b.keys()):
        value = abs(a.get(key, 0.0) - b.get(key, 0.0))
        if value >= best:
            best_key, best = key, value
    return best, best_key
