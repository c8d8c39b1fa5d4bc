"""Mergeable per-feature summaries: what statistics are computed from, and merged with.

A summary of a batch is computed with vectorised Arrow kernels; summaries merge
exactly (counts, minima, maxima, value counts, aligned histograms) or to rounding
(means and variances, by Chan et al.'s parallel formula). The statistics of a file
are the merge of its batches' summaries; the baseline of a dataset is the merge of its
accepted files' summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped,unused-ignore]

from cascade.validation.feature_columns import FeatureColumn, FeatureKind
from cascade.validation.histogram import DEFAULT_MAX_BINS, AlignedHistogram

__all__ = [
    "DatasetSummary",
    "FeatureSummary",
    "NumericSummary",
    "PresenceSummary",
    "StringSummary",
    "summarize_column",
]


@dataclass(frozen=True)
class PresenceSummary:
    """How many examples have the feature, and how many values they have."""

    num_non_missing: int = 0
    num_missing: int = 0
    min_num_values: int = 0
    max_num_values: int = 0
    tot_num_values: int = 0

    def merged(self, other: PresenceSummary) -> PresenceSummary:
        if not other.num_non_missing:
            return replace(self, num_missing=self.num_missing + other.num_missing)
        if not self.num_non_missing:
            return replace(other, num_missing=self.num_missing + other.num_missing)
        return PresenceSummary(
            num_non_missing=self.num_non_missing + other.num_non_missing,
            num_missing=self.num_missing + other.num_missing,
            min_num_values=min(self.min_num_values, other.min_num_values),
            max_num_values=max(self.max_num_values, other.max_num_values),
            tot_num_values=self.tot_num_values + other.tot_num_values,
        )

    def with_missing(self, extra_missing: int) -> PresenceSummary:
        return replace(self, num_missing=self.num_missing + extra_missing)


@dataclass(frozen=True)
class NumericSummary:
    """Moments and extremes of the finite values; NaN and infinities counted apart."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    zeros: int = 0
    nan: int = 0
    inf: int = 0
    histogram: AlignedHistogram = field(default_factory=AlignedHistogram)

    @property
    def std_dev(self) -> float:
        """Population standard deviation (TFDV's)."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def merged(self, other: NumericSummary) -> NumericSummary:
        total = self.count + other.count
        if not total:
            mean, m2 = 0.0, 0.0
        else:
            delta = other.mean - self.mean
            mean = self.mean + delta * other.count / total
            m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / total
        return NumericSummary(
            count=total,
            mean=mean,
            m2=m2,
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
            zeros=self.zeros + other.zeros,
            nan=self.nan + other.nan,
            inf=self.inf + other.inf,
            histogram=self.histogram.merged(other.histogram),
        )


@dataclass(frozen=True)
class StringSummary:
    """Value counts, kept as Arrow arrays and compacted lazily.

    ``parts`` are (values, counts) pairs that may repeat values; ``compacted`` sums them
    and, past ``max_values`` distinct values, keeps the most frequent (``truncated``).
    """

    parts: tuple[tuple[pa.Array, pa.Array], ...] = ()
    total_length: int = 0
    truncated: bool = False

    def merged(self, other: StringSummary, max_values: int) -> StringSummary:
        merged = StringSummary(
            parts=self.parts + other.parts,
            total_length=self.total_length + other.total_length,
            truncated=self.truncated or other.truncated,
        )
        pending = sum(len(values) for values, _ in merged.parts)
        if len(merged.parts) > 1 and pending > 4 * max_values:
            return merged.compacted(max_values)
        return merged

    def compacted(self, max_values: int) -> StringSummary:
        """One part, values unique, sorted by count (descending) then value."""
        if not self.parts:
            return self
        table = pa.table(
            {
                "value": pa.concat_arrays([values for values, _ in self.parts]),
                "count": pa.concat_arrays([counts for _, counts in self.parts]),
            }
        )
        grouped = table.group_by("value").aggregate([("count", "sum")])
        order = pc.sort_indices(
            grouped, sort_keys=[("count_sum", "descending"), ("value", "ascending")]
        )
        ordered = grouped.take(order)
        truncated = self.truncated or ordered.num_rows > max_values
        ordered = ordered.slice(0, max_values)
        part = (
            ordered.column("value").combine_chunks(),
            ordered.column("count_sum").combine_chunks(),
        )
        return StringSummary(parts=(part,), total_length=self.total_length, truncated=truncated)

    def value_counts(self, max_values: int) -> list[tuple[str, int]]:
        """``(value, count)`` from most to least frequent."""
        compact = self.compacted(max_values)
        if not compact.parts:
            return []
        values, counts = compact.parts[0]
        return list(zip(values.to_pylist(), counts.to_pylist(), strict=True))


@dataclass(frozen=True)
class FeatureSummary:
    kind: FeatureKind
    presence: PresenceSummary
    numeric: NumericSummary | None = None
    strings: StringSummary | None = None

    def merged(self, other: FeatureSummary, max_values: int) -> FeatureSummary:
        """Merge; when kinds conflict (INT/FLOAT vs STRING) ``other``'s values win."""
        presence = self.presence.merged(other.presence)
        if self.kind is FeatureKind.NONE:
            return replace(other, presence=presence)
        if other.kind is FeatureKind.NONE:
            return replace(self, presence=presence)
        if self.numeric is not None and other.numeric is not None:
            kind = (
                FeatureKind.INT
                if self.kind == other.kind == FeatureKind.INT
                else (FeatureKind.FLOAT)
            )
            return FeatureSummary(kind, presence, numeric=self.numeric.merged(other.numeric))
        if self.strings is not None and other.strings is not None:
            strings = self.strings.merged(other.strings, max_values)
            return FeatureSummary(FeatureKind.STRING, presence, strings=strings)
        return replace(other, presence=presence)


@dataclass(frozen=True)
class DatasetSummary:
    num_examples: int = 0
    features: dict[str, FeatureSummary] = field(default_factory=dict)

    def merged(self, other: DatasetSummary, max_values: int) -> DatasetSummary:
        """Features absent on one side count as missing in all that side's examples."""
        features: dict[str, FeatureSummary] = {}
        for name in [*self.features, *(n for n in other.features if n not in self.features)]:
            mine, theirs = self.features.get(name), other.features.get(name)
            if mine is None and theirs is not None:
                features[name] = replace(
                    theirs, presence=theirs.presence.with_missing(self.num_examples)
                )
            elif theirs is None and mine is not None:
                features[name] = replace(
                    mine, presence=mine.presence.with_missing(other.num_examples)
                )
            elif mine is not None and theirs is not None:
                features[name] = mine.merged(theirs, max_values)
        return DatasetSummary(self.num_examples + other.num_examples, features)

    def compacted(self, max_values: int) -> DatasetSummary:
        features = {
            name: replace(feature, strings=feature.strings.compacted(max_values))
            if feature.strings is not None
            else feature
            for name, feature in self.features.items()
        }
        return DatasetSummary(self.num_examples, features)


def _presence(column: FeatureColumn) -> PresenceSummary:
    if not column.present:
        return PresenceSummary(num_missing=column.missing)
    if column.lengths is None:
        return PresenceSummary(column.present, column.missing, 1, 1, column.present)
    extremes = pc.min_max(column.lengths).as_py()
    return PresenceSummary(
        num_non_missing=column.present,
        num_missing=column.missing,
        min_num_values=int(extremes["min"] or 0),
        max_num_values=int(extremes["max"] or 0),
        tot_num_values=int(pc.sum(column.lengths).as_py() or 0),
    )


def _without_non_finite(values: pa.ChunkedArray) -> tuple[pa.ChunkedArray, int, int]:
    """Finite values, and the numbers of NaN and infinite ones removed."""
    nan = int(pc.sum(pc.is_nan(values)).as_py() or 0)
    finite = pc.filter(values, pc.is_finite(values))
    return finite, nan, len(values) - nan - len(finite)


def _booleans(values: pa.ChunkedArray) -> NumericSummary:
    """Booleans as 0/1 integers, from one count of the true values."""
    count = len(values)
    ones = int(pc.sum(values).as_py() or 0)
    zeros = count - ones
    mean = ones / count
    counts = {key: number for key, number in ((0, zeros), (1, ones)) if number}
    histogram = AlignedHistogram(scale=0, counts=counts)
    return NumericSummary(
        count=count,
        mean=mean,
        m2=count * mean * (1 - mean),
        minimum=0.0 if zeros else 1.0,
        maximum=1.0 if ones else 0.0,
        zeros=zeros,
        histogram=histogram,
    )


def _numeric(values: pa.ChunkedArray, max_bins: int) -> NumericSummary:
    if pa.types.is_boolean(values.type) and len(values):
        return _booleans(values)
    nan = inf = 0
    mean = pc.mean(values).as_py() if len(values) else None
    if pa.types.is_floating(values.type) and mean is not None and not math.isfinite(mean):
        # a NaN or an infinity makes the mean non-finite: only then look for them
        values, nan, inf = _without_non_finite(values)
        mean = pc.mean(values).as_py() if len(values) else None
    if mean is None:
        return NumericSummary(nan=nan, inf=inf)
    extremes = pc.min_max(values).as_py()
    low, high = float(extremes["min"]), float(extremes["max"])
    histogram = AlignedHistogram.of_values(values, low, high, max_bins=max_bins)
    if histogram.integers and histogram.scale == 0:
        zeros = histogram.counts.get(0, 0)
    else:
        zeros = int(pc.sum(pc.equal(values, pa.scalar(0, values.type))).as_py() or 0)
    count = len(values)
    variance = pc.variance(values).as_py() or 0.0
    return NumericSummary(
        count=count,
        mean=float(mean),
        m2=float(variance) * count,
        minimum=low,
        maximum=high,
        zeros=zeros,
        nan=nan,
        inf=inf,
        histogram=histogram,
    )


def _strings(values: pa.ChunkedArray) -> StringSummary:
    if len(values) == 0:
        return StringSummary()
    counted = pc.value_counts(values)
    distinct = counted.field("values")
    if pa.types.is_dictionary(distinct.type):
        distinct = distinct.dictionary_decode()
    counts = counted.field("counts")
    lengths = pc.multiply(pc.cast(pc.utf8_length(distinct), pa.int64()), counts)
    total_length = int(pc.sum(lengths).as_py() or 0)
    return StringSummary(parts=((distinct, counts),), total_length=total_length)


def summarize_column(column: FeatureColumn, *, max_bins: int = DEFAULT_MAX_BINS) -> FeatureSummary:
    """The summary of one batch's column."""
    presence = _presence(column)
    if column.kind in (FeatureKind.INT, FeatureKind.FLOAT):
        return FeatureSummary(column.kind, presence, numeric=_numeric(column.values, max_bins))
    if column.kind is FeatureKind.STRING:
        return FeatureSummary(column.kind, presence, strings=_strings(column.values))
    return FeatureSummary(FeatureKind.NONE, presence)
