"""Summaries to and from TFMD ``DatasetFeatureStatistics``.

The standard fields (counts, mean, std_dev, min/max, zeros, histograms, top values,
rank histogram) are what TFDV and Facets show. Exact merging also needs the aligned
histogram and the kind; those live in ``custom_stats`` named ``cascade.*``, which
other readers ignore.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

from cascade.core.validation_config import ValidationConfig
from cascade.validation.feature_columns import FeatureKind
from cascade.validation.histogram import AlignedHistogram
from cascade.validation.summaries import (
    DatasetSummary,
    FeatureSummary,
    NumericSummary,
    PresenceSummary,
    StringSummary,
)
from cascade.validation.tfmd import statistics_pb2

__all__ = ["feature_name", "summary_from_proto", "summary_to_proto"]

KIND_STAT = "cascade.kind"
HISTOGRAM_STAT = "cascade.aligned_histogram"
SCALE_STAT = "cascade.aligned_histogram_scale"
INTEGERS_STAT = "cascade.aligned_histogram_integers"
INF_STAT = "cascade.num_inf"
TRUNCATED_STAT = "cascade.value_counts_truncated"
TOTAL_LENGTH_STAT = "cascade.total_length"
QUANTILE_BUCKETS = 10

_PROTO_TYPES = {
    FeatureKind.INT: statistics_pb2.FeatureNameStatistics.INT,
    FeatureKind.FLOAT: statistics_pb2.FeatureNameStatistics.FLOAT,
    FeatureKind.STRING: statistics_pb2.FeatureNameStatistics.STRING,
    FeatureKind.NONE: statistics_pb2.FeatureNameStatistics.STRING,
}


def feature_name(feature: Any) -> str:
    """A FeatureNameStatistics' name, whether it uses ``name`` or ``path``."""
    if feature.HasField("path"):
        return ".".join(feature.path.step)
    return str(feature.name)


def summary_to_proto(summary: DatasetSummary, config: ValidationConfig, *, name: str) -> Any:
    dataset = statistics_pb2.DatasetFeatureStatistics(name=name, num_examples=summary.num_examples)
    for feature_key, feature in summary.features.items():
        proto = dataset.features.add()
        proto.path.step.append(feature_key)
        proto.type = _PROTO_TYPES[feature.kind]
        _custom(proto, KIND_STAT, text=feature.kind.value)
        if feature.numeric is not None:
            _numeric_to_proto(feature.numeric, feature.presence, proto, config)
        else:
            _strings_to_proto(feature.strings or StringSummary(), feature.presence, proto, config)
    return dataset


def _custom(proto: Any, name: str, *, num: float | None = None, text: str | None = None) -> Any:
    stat = proto.custom_stats.add(name=name)
    if num is not None:
        stat.num = num
    if text is not None:
        stat.str = text
    return stat


def _common_to_proto(presence: PresenceSummary, common: Any) -> None:
    common.num_non_missing = presence.num_non_missing
    common.num_missing = presence.num_missing
    common.min_num_values = presence.min_num_values
    common.max_num_values = presence.max_num_values
    common.tot_num_values = presence.tot_num_values
    if presence.num_non_missing:
        common.avg_num_values = presence.tot_num_values / presence.num_non_missing


def _numeric_to_proto(
    numeric: NumericSummary, presence: PresenceSummary, proto: Any, config: ValidationConfig
) -> None:
    stats = proto.num_stats
    _common_to_proto(presence, stats.common_stats)
    stats.mean = numeric.mean
    stats.std_dev = numeric.std_dev
    stats.num_zeros = numeric.zeros
    if numeric.count:
        low, high = numeric.minimum, numeric.maximum
        stats.min, stats.max = low, high
        stats.median = numeric.histogram.quantiles([0.5], low, high, zeros=numeric.zeros)[0]
        _standard_histogram(numeric, stats.histograms.add(), config.histogram_buckets)
        _quantiles_histogram(numeric, stats.histograms.add())
    else:
        stats.histograms.add(num_nan=numeric.nan, type=statistics_pb2.Histogram.STANDARD)
    aligned = _custom(proto, HISTOGRAM_STAT).histogram
    aligned.name = HISTOGRAM_STAT
    aligned.num_nan = numeric.nan
    for low, high, count in numeric.histogram.bins():
        aligned.buckets.add(low_value=low, high_value=high, sample_count=count)
    _custom(proto, SCALE_STAT, num=numeric.histogram.scale)
    _custom(proto, INTEGERS_STAT, num=1.0 if numeric.histogram.integers else 0.0)
    _custom(proto, INF_STAT, num=numeric.inf)


def _standard_histogram(numeric: NumericSummary, histogram: Any, buckets: int) -> None:
    histogram.type = statistics_pb2.Histogram.STANDARD
    histogram.num_nan = numeric.nan
    low, high = numeric.minimum, numeric.maximum
    width = (high - low) / buckets
    boundaries = [low + width * i for i in range(1, buckets)] if width > 0 else []
    masses = numeric.histogram.masses(boundaries, low, high, zeros=numeric.zeros)
    edges = [low, *boundaries, high]
    for index, mass in enumerate(masses):
        histogram.buckets.add(
            low_value=edges[index], high_value=edges[index + 1], sample_count=mass
        )


def _quantiles_histogram(numeric: NumericSummary, histogram: Any) -> None:
    histogram.type = statistics_pb2.Histogram.QUANTILES
    histogram.num_nan = numeric.nan
    low, high = numeric.minimum, numeric.maximum
    fractions = [i / QUANTILE_BUCKETS for i in range(QUANTILE_BUCKETS + 1)]
    points = numeric.histogram.quantiles(fractions, low, high, zeros=numeric.zeros)
    share = numeric.count / QUANTILE_BUCKETS
    for index in range(QUANTILE_BUCKETS):
        histogram.buckets.add(
            low_value=points[index], high_value=points[index + 1], sample_count=share
        )


def _strings_to_proto(
    strings: StringSummary, presence: PresenceSummary, proto: Any, config: ValidationConfig
) -> None:
    stats = proto.string_stats
    _common_to_proto(presence, stats.common_stats)
    counts = strings.value_counts(config.max_tracked_values)
    stats.unique = len(counts)
    if presence.tot_num_values:
        stats.avg_length = strings.total_length / presence.tot_num_values
    for value, count in counts[: config.top_values]:
        stats.top_values.add(value=value, frequency=count)
    for rank, (value, count) in enumerate(counts):
        stats.rank_histogram.buckets.add(
            low_rank=rank, high_rank=rank, label=value, sample_count=count
        )
    _custom(proto, TRUNCATED_STAT, num=1.0 if strings.truncated else 0.0)
    _custom(proto, TOTAL_LENGTH_STAT, num=strings.total_length)


def summary_from_proto(dataset: Any) -> DatasetSummary:
    features = {feature_name(proto): _feature_from_proto(proto) for proto in dataset.features}
    return DatasetSummary(num_examples=int(dataset.num_examples), features=features)


def _customs(proto: Any) -> dict[str, Any]:
    return {stat.name: stat for stat in proto.custom_stats}


def _presence_from_proto(common: Any) -> PresenceSummary:
    return PresenceSummary(
        num_non_missing=int(common.num_non_missing),
        num_missing=int(common.num_missing),
        min_num_values=int(common.min_num_values),
        max_num_values=int(common.max_num_values),
        tot_num_values=int(common.tot_num_values),
    )


def _feature_from_proto(proto: Any) -> FeatureSummary:
    customs = _customs(proto)
    kind = FeatureKind(customs[KIND_STAT].str) if KIND_STAT in customs else _kind_of_type(proto)
    if proto.HasField("num_stats"):
        presence = _presence_from_proto(proto.num_stats.common_stats)
        return FeatureSummary(kind, presence, numeric=_numeric_from_proto(proto, customs))
    presence = _presence_from_proto(proto.string_stats.common_stats)
    if kind is FeatureKind.NONE:
        return FeatureSummary(kind, presence)
    return FeatureSummary(kind, presence, strings=_strings_from_proto(proto, customs))


def _kind_of_type(proto: Any) -> FeatureKind:
    if proto.type == statistics_pb2.FeatureNameStatistics.INT:
        return FeatureKind.INT
    if proto.type == statistics_pb2.FeatureNameStatistics.FLOAT:
        return FeatureKind.FLOAT
    return FeatureKind.STRING


def _numeric_from_proto(proto: Any, customs: dict[str, Any]) -> NumericSummary:
    stats = proto.num_stats
    histogram = AlignedHistogram(integers=proto.type == statistics_pb2.FeatureNameStatistics.INT)
    if HISTOGRAM_STAT in customs:
        histogram = _aligned_from_proto(customs)
    count = histogram.total
    nan = int(customs[HISTOGRAM_STAT].histogram.num_nan) if HISTOGRAM_STAT in customs else 0
    return NumericSummary(
        count=count,
        mean=float(stats.mean),
        m2=float(stats.std_dev) ** 2 * count,
        minimum=float(stats.min) if count else math.inf,
        maximum=float(stats.max) if count else -math.inf,
        zeros=int(stats.num_zeros),
        nan=nan,
        inf=int(customs[INF_STAT].num) if INF_STAT in customs else 0,
        histogram=histogram,
    )


def _aligned_from_proto(customs: dict[str, Any]) -> AlignedHistogram:
    scale = int(customs[SCALE_STAT].num)
    width = math.ldexp(1.0, scale)
    counts = {
        round(bucket.low_value / width): int(bucket.sample_count)
        for bucket in customs[HISTOGRAM_STAT].histogram.buckets
    }
    integers = bool(customs[INTEGERS_STAT].num) if INTEGERS_STAT in customs else False
    return AlignedHistogram(scale=scale, counts=counts, integers=integers)


def _strings_from_proto(proto: Any, customs: dict[str, Any]) -> StringSummary:
    stats = proto.string_stats
    buckets = stats.rank_histogram.buckets
    if not buckets:
        return StringSummary()
    values = pa.array([bucket.label for bucket in buckets], pa.string())
    counts = pa.array([int(bucket.sample_count) for bucket in buckets], pa.int64())
    total_length = (
        int(customs[TOTAL_LENGTH_STAT].num)
        if TOTAL_LENGTH_STAT in customs
        else round(stats.avg_length * stats.common_stats.tot_num_values)
    )
    truncated = bool(customs[TRUNCATED_STAT].num) if TRUNCATED_STAT in customs else False
    return StringSummary(parts=((values, counts),), total_length=total_length, truncated=truncated)
