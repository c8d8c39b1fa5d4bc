"""Baseline vs current distribution of the features whose drift was measured.

The baseline a file was judged against is not stored per run (the dataset's baseline
moves on as files are accepted), so it is rebuilt from the statistics of the files
accepted before this run's validation started, as listed by the accepted-files
manifests. With too many of them, the dataset's stored baseline stands in, and the
report says so. Numeric features are shown in buckets cut at the baseline's quantiles,
categorical ones by value.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import TransientError
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore
from cascade.core.validation_config import ValidationConfig
from cascade.report.charts import Bar, BarRow, horizontal_bar_chart
from cascade.report.page_model import DistributionView, DriftView, ShareRow
from cascade.report.reading import object_name, read_json
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.drift import drift_boundaries, shares
from cascade.validation.manifest import AcceptedFile
from cascade.validation.statistics import summary_of_statistics
from cascade.validation.summaries import DatasetSummary, FeatureSummary
from cascade.validation.tfmd import statistics_pb2

__all__ = [
    "MAX_BASELINE_FILES",
    "MAX_DISTRIBUTIONS",
    "BaselineUsed",
    "baseline_before",
    "distribution_views",
    "read_summary",
]

MAX_BASELINE_FILES = 200
"""Most accepted files whose statistics are merged to rebuild a run's baseline."""
MAX_DISTRIBUTIONS = 12
_TOP_VALUES = 10


@dataclass(frozen=True)
class BaselineUsed:
    summary: DatasetSummary | None
    note: str


def read_summary(artifacts: ArtifactStore, name: str) -> DatasetSummary | None:
    """The summary in a statistics proto; None when absent or not a statistics proto."""
    stored = artifacts.read(name)
    if stored is None:
        return None
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        statistics.ParseFromString(stored.data)
    except DecodeError:
        return None
    return summary_of_statistics(statistics)


def _accepted_before(
    artifacts: ArtifactStore, dataset: str, run_id: str, started_at: datetime
) -> list[AcceptedFile]:
    files = []
    for name in artifacts.list_names(DatasetPaths(dataset).accepted_prefix):
        manifest = read_json(artifacts, name, AcceptedFile).value
        if manifest is not None and manifest.run_id != run_id and manifest.accepted_at < started_at:
            files.append(manifest)
    return sorted(files, key=lambda manifest: manifest.accepted_at)


def _stored_baseline(artifacts: ArtifactStore, dataset: str, why: str) -> BaselineUsed:
    baselines = BaselineStore(artifacts, dataset)
    try:
        stored = baselines.load()
    except TransientError:
        stored = None
    if stored is None:
        return BaselineUsed(None, f"{why}, and {baselines.uri} cannot be read.")
    return BaselineUsed(
        stored.summary,
        f"Baseline: the dataset's stored baseline as it is now ({baselines.uri}); "
        f"{why}, so it may include files accepted after this run.",
    )


def baseline_before(
    artifacts: ArtifactStore,
    dataset: str,
    run_id: str,
    started_at: datetime,
    config: ValidationConfig,
) -> BaselineUsed:
    """The statistics of the data accepted before ``started_at`` (this run's validation)."""
    files = _accepted_before(artifacts, dataset, run_id, started_at)
    if not files:
        return _stored_baseline(artifacts, dataset, "no accepted-files manifest predates this run")
    if len(files) > MAX_BASELINE_FILES:
        why = f"{len(files)} files were accepted before it (rebuilt up to {MAX_BASELINE_FILES})"
        return _stored_baseline(artifacts, dataset, why)
    merged = DatasetSummary()
    for manifest in files:
        name = object_name(artifacts, manifest.stats_uri)
        summary = None if name is None else read_summary(artifacts, name)
        if summary is None:
            why = f"the statistics of {manifest.uri} ({manifest.stats_uri}) cannot be read"
            return _stored_baseline(artifacts, dataset, why)
        merged = merged.merged(summary, config.max_tracked_values)
    return BaselineUsed(
        merged,
        f"Baseline: the {len(files)} file(s) of {dataset} accepted before this run, "
        "merged from their statistics.",
    )


def _numeric_rows(
    baseline: FeatureSummary, current: FeatureSummary, bins: int
) -> list[ShareRow] | None:
    if baseline.numeric is None or current.numeric is None or not baseline.numeric.count:
        return None
    boundaries = drift_boundaries(baseline.numeric, bins)
    old, new = shares(baseline.numeric, boundaries), shares(current.numeric, boundaries)
    edges = [f"{boundary:.4g}" for boundary in boundaries]
    if not edges:
        labels = ["all values"]
    else:
        middle = [f"{low} to {high}" for low, high in itertools.pairwise(edges)]
        labels = [f"< {edges[0]}", *middle, f">= {edges[-1]}"]
    return [
        ShareRow(label=label, baseline=o, current=n)
        for label, o, n in zip(labels, old, new, strict=True)
    ]


def _categorical_rows(
    baseline: FeatureSummary, current: FeatureSummary, max_values: int
) -> list[ShareRow] | None:
    if baseline.strings is None or current.strings is None:
        return None

    def share_of(feature: FeatureSummary) -> dict[str, float]:
        assert feature.strings is not None
        counts = feature.strings.value_counts(max_values)
        total = sum(count for _, count in counts) or 1
        return {value: count / total for value, count in counts}

    old, new = share_of(baseline), share_of(current)
    ranked = sorted(
        set(old) | set(new), key=lambda value: (-max(old.get(value, 0), new.get(value, 0)), value)
    )
    return [
        ShareRow(label=value, baseline=old.get(value, 0.0), current=new.get(value, 0.0))
        for value in ranked[:_TOP_VALUES]
    ]


def _view(feature: str, kind: str, drifted: bool, rows: list[ShareRow]) -> DistributionView:
    bar_rows = [
        BarRow(
            label=row.label,
            bars=[
                Bar(value=row.baseline, css="baseline", title=f"baseline: {row.baseline:.1%}"),
                Bar(value=row.current, css="current", title=f"this file: {row.current:.1%}"),
            ],
            value_text=f"{row.baseline:.0%} → {row.current:.0%}",
        )
        for row in rows
    ]
    chart = horizontal_bar_chart(
        bar_rows, description=f"{feature}: share of values, baseline vs this file", bar_height=8
    )
    return DistributionView(feature=feature, kind=kind, drifted=drifted, rows=rows, chart=chart)


def distribution_views(
    drift: list[DriftView],
    baseline: DatasetSummary,
    current: DatasetSummary,
    config: ValidationConfig,
) -> list[DistributionView]:
    """One view per feature whose drift was measured, drifted ones first."""
    drifted = {item.feature for item in drift if item.exceeded}
    features = sorted(
        {item.feature for item in drift}, key=lambda name: (name not in drifted, name)
    )
    views = []
    for feature in features[:MAX_DISTRIBUTIONS]:
        old, new = baseline.features.get(feature), current.features.get(feature)
        if old is None or new is None:
            continue
        numeric = _numeric_rows(old, new, config.drift_bins)
        if numeric is not None:
            views.append(_view(feature, "numeric", feature in drifted, numeric))
            continue
        categorical = _categorical_rows(old, new, config.max_tracked_values)
        if categorical is not None:
            views.append(_view(feature, "categorical", feature in drifted, categorical))
    return views
