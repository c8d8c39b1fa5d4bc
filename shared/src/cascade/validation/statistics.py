"""Statistics of a file, computed batch by batch, and their merge for the baseline.

``compute_statistics`` reads a source in bounded batches and folds per-batch summaries;
``statistics_proto`` writes the result as a tensorflow-metadata
``DatasetFeatureStatisticsList`` (the format TFDV and Facets read), with the extra
state exact merging needs kept in ``custom_stats`` (``cascade.*``). ``merge_statistics``
merges two such protos without the raw data.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

from cascade.core.validation_config import ValidationConfig
from cascade.validation.feature_columns import feature_column
from cascade.validation.prefetch import prefetched
from cascade.validation.proto_codec import summary_from_proto, summary_to_proto
from cascade.validation.reader import read_batches
from cascade.validation.source import DataSource
from cascade.validation.summaries import DatasetSummary, FeatureSummary, summarize_column
from cascade.validation.tfmd import statistics_pb2
from cascade.validation.widening import ColumnWidening

__all__ = [
    "compute_statistics",
    "merge_statistics",
    "statistics_proto",
    "summarize_batches",
    "summary_of_statistics",
]

_MAX_RESTARTS = 64
# Arrow kernels release the GIL: a block's columns are summarised side by side.
_COLUMN_WORKERS = ThreadPoolExecutor(
    max_workers=max(pa.cpu_count(), 2), thread_name_prefix="cascade-stats"
)


def summarize_batch(
    batch: pa.RecordBatch | pa.Table, *, uri: str, float_features: frozenset[str]
) -> DatasetSummary:
    """Summaries of every column of one batch."""
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])

    def summarize(name: str) -> FeatureSummary:
        column = table.column(name)
        return summarize_column(
            feature_column(name, column, as_float=name in float_features, uri=uri)
        )

    summaries = _COLUMN_WORKERS.map(summarize, table.column_names)
    features = dict(zip(table.column_names, summaries, strict=True))
    return DatasetSummary(num_examples=table.num_rows, features=features)


def summarize_batches(
    batches: Iterable[pa.RecordBatch | pa.Table],
    config: ValidationConfig,
    *,
    uri: str = "",
    float_features: frozenset[str] = frozenset(),
) -> DatasetSummary:
    """Fold the summaries of ``batches``; only one batch is held at a time."""
    total = DatasetSummary()
    for batch in batches:
        summary = summarize_batch(batch, uri=uri, float_features=float_features)
        total = total.merged(summary, config.max_tracked_values)
    return total.compacted(config.max_tracked_values)


def compute_statistics(
    source: DataSource,
    config: ValidationConfig,
    *,
    float_features: frozenset[str] = frozenset(),
    string_features: frozenset[str] = frozenset(),
) -> DatasetSummary:
    """Summarise ``source``; restarts when a CSV column turns out wider than inferred.

    ``float_features`` and ``string_features`` (FLOAT and BYTES in the schema) are read
    as floats and strings even when a file holds only whole numbers or only digits.
    """
    column_types: dict[str, pa.DataType] = {name: pa.float64() for name in float_features}
    column_types.update({name: pa.string() for name in string_features})
    for _ in range(_MAX_RESTARTS):
        try:
            return summarize_batches(
                prefetched(read_batches(source, config, column_types)),
                config,
                uri=source.uri,
                float_features=float_features,
            )
        except ColumnWidening as widening:
            column_types[widening.column] = widening.new_type
    raise RuntimeError(f"{source.uri}: column types did not settle after {_MAX_RESTARTS} reads")


def statistics_proto(
    summary: DatasetSummary, config: ValidationConfig, *, name: str
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """The TFMD statistics list of one dataset named ``name``."""
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    statistics.datasets.append(summary_to_proto(summary, config, name=name))
    return statistics


def summary_of_statistics(
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
) -> DatasetSummary:
    """The summary stored in a statistics list written by ``statistics_proto``."""
    if not statistics.datasets:
        return DatasetSummary()
    return summary_from_proto(statistics.datasets[0])


def merge_statistics(
    left: statistics_pb2.DatasetFeatureStatisticsList,
    right: statistics_pb2.DatasetFeatureStatisticsList,
    config: ValidationConfig,
    *,
    name: str = "baseline",
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Exact merge: counts, value counts and histograms add; means and variances combine."""
    merged = summary_of_statistics(left).merged(
        summary_of_statistics(right), config.max_tracked_values
    )
    return statistics_proto(merged.compacted(config.max_tracked_values), config, name=name)
