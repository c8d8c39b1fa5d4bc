"""A mergeable histogram of finite numbers on power-of-two aligned bins.

Bin ``k`` at scale ``s`` is ``[k * 2**s, (k + 1) * 2**s)``. Grids of different scales
nest (a bin at scale ``s + 1`` is exactly two bins at scale ``s``), so two histograms
merge exactly: coarsen the finer one, add counts, coarsen until at most ``max_bins``
bins span the range. The scale is always the smallest that fits the range, so merging
the histograms of two parts gives the histogram of the whole, bin for bin.

Quantiles and standard histograms are read from its *cells*: a bin whose values are all
one number is a point (an integer bin at scale 0, and the zeros of bin ``[0, w)``,
whose count the caller knows exactly), any other bin is assumed to spread its values
evenly over its width clipped to the data's range: the error is at most one bin
(range / max_bins or less). Points are never spread, so 999 zeros and a one are not
read as values spread over ``[0, 1)``. Integer data never goes below scale 0, so
small-range integers are counted exactly. Drift measures read the bins themselves,
at bin edges, where counts are exact (``cascade.validation.drift``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped,unused-ignore]

__all__ = ["DEFAULT_MAX_BINS", "AlignedHistogram", "Cell"]

DEFAULT_MAX_BINS = 1024
_MANTISSA_BITS = 52


def _bins_spanned(low: float, high: float, scale: int) -> int:
    width = math.ldexp(1.0, scale)
    return math.floor(high / width) - math.floor(low / width) + 1


def _finest_scale(low: float, high: float, *, integers: bool) -> int:
    """Below this scale bin keys would exceed 2**53 (floats) or split integers."""
    if integers:
        return 0
    magnitude = max(abs(low), abs(high))
    exponent = math.frexp(magnitude)[1] if magnitude > 0 else -1021
    # 2**-scale multiplies the values: it must be a finite double (2**1023 at most), so
    # an all-zero (or subnormal) column gets the finest scale that can be computed
    return max(exponent - _MANTISSA_BITS, -1023)


def _fitting_scale(low: float, high: float, max_bins: int, floor_scale: int) -> int:
    """The smallest scale >= ``floor_scale`` at which [low, high] spans <= max_bins."""
    span = high - low
    scale = floor_scale
    if span > 0:
        scale = max(scale, math.ceil(math.log2(span / max_bins)))
    while _bins_spanned(low, high, scale) > max_bins:
        scale += 1
    return scale


@dataclass(frozen=True)
class Cell:
    """Values of one bin, or the zeros of bin 0: ``point`` when all equal ``low``."""

    low: float
    high: float
    count: int
    point: bool


@dataclass
class AlignedHistogram:
    """Counts of finite values per aligned bin; empty when no finite value was seen."""

    scale: int = 0
    counts: dict[int, int] = field(default_factory=dict)
    integers: bool = True
    max_bins: int = DEFAULT_MAX_BINS

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.scale)

    @classmethod
    def of_values(
        cls, values: pa.Array, low: float, high: float, *, max_bins: int = DEFAULT_MAX_BINS
    ) -> AlignedHistogram:
        """Histogram of ``values`` (finite, no nulls) whose minimum and maximum are given."""
        integers = pa.types.is_integer(values.type)
        scale = _fitting_scale(low, high, max_bins, _finest_scale(low, high, integers=integers))
        if integers:
            keys = pc.shift_right(values, scale) if scale else values
        else:
            # whole numbers below 2**53 as doubles: hashing them needs no cast to int64
            keys = pc.floor(pc.multiply(values, math.ldexp(1.0, -scale)))
        counted = pc.value_counts(keys)
        counts = {
            int(key): count
            for key, count in zip(
                counted.field("values").to_pylist(),
                counted.field("counts").to_pylist(),
                strict=True,
            )
        }
        return cls(scale=scale, counts=counts, integers=integers, max_bins=max_bins)

    def coarsened(self, scale: int) -> AlignedHistogram:
        """The same counts on the coarser grid of ``scale`` (>= this scale)."""
        shift = scale - self.scale
        if shift <= 0:
            return self
        counts: dict[int, int] = {}
        for key, count in self.counts.items():
            counts[key >> shift] = counts.get(key >> shift, 0) + count
        return AlignedHistogram(scale, counts, self.integers, self.max_bins)

    def merged(self, other: AlignedHistogram) -> AlignedHistogram:
        """Exact merge: the histogram the union of both samples would have."""
        if not other.counts:
            return self
        if not self.counts:
            return other
        scale = max(self.scale, other.scale)
        left, right = self.coarsened(scale), other.coarsened(scale)
        counts = dict(left.counts)
        for key, count in right.counts.items():
            counts[key] = counts.get(key, 0) + count
        merged = AlignedHistogram(
            scale, counts, self.integers and other.integers, max(self.max_bins, other.max_bins)
        )
        while max(counts) - min(counts) + 1 > merged.max_bins:
            merged = merged.coarsened(merged.scale + 1)
            counts = merged.counts
        return merged

    def bins(self) -> list[tuple[float, float, int]]:
        """``(low, high, count)`` per non-empty bin, in increasing order."""
        width = self.width
        return [(key * width, (key + 1) * width, self.counts[key]) for key in sorted(self.counts)]

    @property
    def points(self) -> bool:
        """True when every bin holds a single value: integers at scale 0."""
        return self.integers and self.scale <= 0

    def cells(self, zeros: int = 0) -> list[Cell]:
        """The bins in increasing order, bin 0's ``zeros`` (exact zeros) split off as a point."""
        cells: list[Cell] = []
        points = self.points
        for low, high, count in self.bins():
            if points:
                cells.append(Cell(low, low, count, True))
                continue
            at_zero = min(zeros, count) if low == 0 else 0
            if at_zero:
                cells.append(Cell(0.0, 0.0, at_zero, True))
            if count > at_zero:
                cells.append(Cell(low, high, count - at_zero, False))
        return cells

    def masses(
        self, boundaries: Sequence[float], low: float, high: float, *, zeros: int = 0
    ) -> list[float]:
        """Counts in the buckets the sorted ``boundaries`` cut (len(boundaries) + 1).

        A value ``v`` is in bucket ``bisect_right(boundaries, v)``. Points (see
        ``cells``) go whole into their bucket; other bins are clipped to the data's
        [low, high] and split in proportion to their width on each side of a boundary.
        One pass over the bins.
        """
        buckets = [0.0] * (len(boundaries) + 1)
        for cell in self.cells(zeros):
            start, end = max(cell.low, low), min(cell.high, high)
            first = bisect.bisect_right(boundaries, start)
            last = bisect.bisect_left(boundaries, end)
            if cell.point or last <= first or end <= start:
                buckets[min(first, len(boundaries))] += cell.count
                continue
            edges = [start, *boundaries[first:last], end]
            for offset in range(len(edges) - 1):
                share = (edges[offset + 1] - edges[offset]) / (end - start)
                buckets[first + offset] += cell.count * share
        return buckets

    def quantiles(
        self, fractions: Sequence[float], low: float, high: float, *, zeros: int = 0
    ) -> list[float]:
        """Values below which the given (ascending) fractions of the data lie.

        A point's value, or interpolated inside the bin where each fraction falls; one
        pass over the bins.
        """
        total = self.total
        if total == 0:
            return [math.nan for _ in fractions]
        results: list[float] = []
        targets = iter(fraction * total for fraction in fractions)
        target = next(targets, None)
        seen = 0.0
        for cell in self.cells(zeros):
            start, end = max(cell.low, low), min(cell.high, high)
            if cell.point:
                start = end = min(max(cell.low, low), high)
            while target is not None and seen + cell.count >= target:
                share = (target - seen) / cell.count if cell.count else 0.0
                results.append(min(max(start + share * (end - start), low), high))
                target = next(targets, None)
            seen += cell.count
        results.extend(high for _ in range(len(fractions) - len(results)))
        return results
