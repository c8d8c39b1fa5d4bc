"""Fit the transform from a dataset's merged statistics (nothing is read but the stats).

Numeric features are standardised with the baseline's mean and (population) standard
deviation, missing values filled with the mean, raw values clipped to the observed
range first; optional bucketization comes from the config. String features get a
vocabulary of their values, most frequent first, plus out-of-vocabulary buckets, unless
they have more distinct values than ``vocabulary_max_size`` (or more than the
statistics track): those are hashed. The label's classes come from its values.

The feature set is the schema's, not the baseline's: only columns the dataset's schema
lists can be features (or the label, or the key), and only the active ones are fitted;
a deprecated (or otherwise disabled) feature is listed as skipped with the reason. A
column the baseline holds but the schema does not (a baseline written before the
baseline followed the schema) is not a feature at all.

Everything here is deterministic: the same statistics and config fit the same spec.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from cascade.core.errors import InvalidConfigError
from cascade.core.store import ArtifactStore
from cascade.core.training_config import TransformConfig
from cascade.transform.spec import (
    FeatureTransform,
    HashTransform,
    LabelSpec,
    NumericTransform,
    SplitSpec,
    VocabularyTransform,
)
from cascade.validation.feature_columns import FeatureKind
from cascade.validation.schema import inactive_reason, restricted_to_schema
from cascade.validation.schema_store import read_schema
from cascade.validation.summaries import DatasetSummary, FeatureSummary

__all__ = ["FittedTransform", "dataset_schema", "fit_transform", "split_salt"]

_MAX_TRACKED = 1_000_000  # value_counts() limit: far above any vocabulary
_LISTED_COLUMNS = 50  # columns an error message names


@dataclass(frozen=True)
class FittedTransform:
    label: LabelSpec
    features: list[FeatureTransform]
    split: SplitSpec
    passthrough_key: str | None
    skipped: dict[str, str]


def split_salt(dataset: str) -> str:
    """Each dataset splits independently of the others, and always the same way."""
    return f"cascade:{dataset}"


def dataset_schema(store: ArtifactStore, dataset: str) -> Any | None:
    """The dataset's stored schema (what ``fit_transform`` takes features from), or None."""
    stored = read_schema(store, dataset)
    return None if stored is None else stored.schema


def fit_transform(
    summary: DatasetSummary,
    *,
    dataset: str,
    label: str | None,
    problem_type: str | None,
    config: TransformConfig,
    schema: Any | None,
) -> FittedTransform:
    """The transform of ``summary``; InvalidConfigError says what the config gets wrong.

    ``schema`` is the dataset's schema: only its active features are fitted. None (a
    dataset whose schema was deleted) fits every column of ``summary``.
    """
    if not label or not problem_type:
        raise InvalidConfigError(
            f"dataset {dataset}: the pipeline config needs `label` and `problem_type` "
            "(binary, multiclass or regression) before a model can be trained"
        )
    inactive: dict[str, str] = {}
    if schema is not None:
        summary = restricted_to_schema(summary, schema)
        inactive = _inactive_features(schema)
    _check_columns_exist(summary, dataset, label, config, governed=schema is not None)
    label_spec = fit_label(label, problem_type, summary.features[label], config)
    features, skipped = _fit_features(summary, label, config, inactive)
    if not features:
        raise InvalidConfigError(
            f"dataset {dataset}: no usable feature columns besides the label {label!r} "
            f"(skipped: {skipped or 'none'})"
        )
    split = SplitSpec(
        method="key" if config.key_column else "row_hash",
        key_column=config.key_column,
        eval_fraction=config.eval_fraction,
        salt=split_salt(dataset),
    )
    return FittedTransform(label_spec, features, split, config.key_column, skipped)


def _inactive_features(schema: Any) -> dict[str, str]:
    reasons = {feature.name: inactive_reason(feature) for feature in schema.feature}
    return {name: reason for name, reason in reasons.items() if reason is not None}


def _check_columns_exist(
    summary: DatasetSummary, dataset: str, label: str, config: TransformConfig, *, governed: bool
) -> None:
    columns = sorted(summary.features)
    listed = ", ".join(columns[:_LISTED_COLUMNS])
    if len(columns) > _LISTED_COLUMNS:
        listed += f", ... ({len(columns)} in all)"
    where = (
        "a feature of the dataset's schema with statistics in the accepted data (a new "
        "column joins with `cascade schema accept-feature`)"
        if governed
        else "a column of the accepted data"
    )
    named = {"label": [label], "transform.key_column": [config.key_column or label]}
    named["transform.bucketize"] = sorted(config.bucketize)
    for field, names in named.items():
        missing = [name for name in names if name not in summary.features]
        if missing:
            raise InvalidConfigError(
                f"dataset {dataset}: {field} names {', '.join(map(repr, missing))}, not "
                f"{where} (columns: {listed})"
            )


def _fit_features(
    summary: DatasetSummary, label: str, config: TransformConfig, inactive: dict[str, str]
) -> tuple[list[FeatureTransform], dict[str, str]]:
    excluded = {label, *config.exclude, *([config.key_column] if config.key_column else [])}
    features: list[FeatureTransform] = []
    skipped: dict[str, str] = {}
    for name in sorted(summary.features):
        if name in excluded:
            continue
        if name in inactive:
            skipped[name] = inactive[name]
            continue
        fitted = fit_feature(name, summary.features[name], config)
        if isinstance(fitted, str):
            skipped[name] = fitted
        else:
            features.append(fitted)
    return features, skipped


def fit_feature(
    name: str, feature: FeatureSummary, config: TransformConfig
) -> FeatureTransform | str:
    """The transform of one feature, or why it has none."""
    if feature.presence.max_num_values > 1:
        return "multivalent (lists of values are not supported)"
    if feature.numeric is not None:
        return _fit_numeric(name, feature, config)
    if name in config.bucketize:
        raise InvalidConfigError(f"transform.bucketize: {name!r} is not a numeric column")
    if feature.strings is not None and feature.kind is FeatureKind.STRING:
        return _fit_strings(name, feature, config)
    return "no values in the accepted data"


def _fit_numeric(
    name: str, feature: FeatureSummary, config: TransformConfig
) -> NumericTransform | str:
    numeric = feature.numeric
    assert numeric is not None
    if numeric.count == 0:
        return "no finite values in the accepted data"
    std = numeric.std_dev
    if not math.isfinite(std) or std <= 0:
        std = 1.0  # a constant column: centring is all there is to do
    boundaries = config.bucketize.get(name, [])
    if any(low >= high for low, high in itertools.pairwise(boundaries)):
        raise InvalidConfigError(
            f"transform.bucketize.{name}: boundaries must increase strictly, got {boundaries}"
        )
    return NumericTransform(
        name=name,
        mean=numeric.mean,
        std=std,
        fill_value=numeric.mean,
        clip=(numeric.minimum, numeric.maximum),
        bucket_boundaries=list(boundaries),
    )


def _fit_strings(
    name: str, feature: FeatureSummary, config: TransformConfig
) -> VocabularyTransform | HashTransform | str:
    strings = feature.strings
    assert strings is not None
    counts = strings.value_counts(_MAX_TRACKED)
    if not counts:
        return "no values in the accepted data"
    if strings.truncated or len(counts) > config.vocabulary_max_size:
        return HashTransform(name=name, hash_buckets=config.hash_buckets)
    return VocabularyTransform(
        name=name,
        vocabulary=[value for value, _ in counts],
        num_oov_buckets=config.num_oov_buckets,
    )


def fit_label(
    name: str, problem_type: str, feature: FeatureSummary, config: TransformConfig
) -> LabelSpec:
    """The label spec; classes in index order for classification (sorted values)."""
    if problem_type == "regression":
        if feature.numeric is None:
            raise InvalidConfigError(
                f"label {name!r} holds text, but problem_type is regression: use binary or "
                "multiclass, or a numeric label"
            )
        return LabelSpec(name=name, problem_type="regression")
    if problem_type not in ("binary", "multiclass"):
        raise InvalidConfigError(f"unknown problem_type {problem_type!r}")
    classes = label_classes(name, feature, config.vocabulary_max_size)
    expected = "exactly 2" if problem_type == "binary" else "at least 2"
    if (problem_type == "binary" and len(classes) != 2) or len(classes) < 2:
        raise InvalidConfigError(
            f"label {name!r} has {len(classes)} distinct value(s) ({', '.join(classes[:10])}); "
            f"a {problem_type} label needs {expected}"
        )
    return LabelSpec(name=name, problem_type=problem_type, classes=classes)


def label_classes(name: str, feature: FeatureSummary, max_classes: int) -> list[str]:
    """The label's distinct values as strings: text sorted, integers sorted numerically."""
    if feature.strings is not None:
        if feature.strings.truncated:
            raise InvalidConfigError(f"label {name!r} has too many distinct values to classify")
        values = sorted(value for value, _ in feature.strings.value_counts(_MAX_TRACKED))
        return _limited(name, values, max_classes)
    numeric = feature.numeric
    if numeric is None or numeric.count == 0:
        raise InvalidConfigError(f"label {name!r} has no values in the accepted data")
    histogram = numeric.histogram
    if histogram.integers and histogram.scale == 0:
        integers = sorted(int(value) for value, count in histogram.counts.items() if count)
    elif numeric.minimum.is_integer() and numeric.maximum.is_integer():
        if numeric.maximum - numeric.minimum >= max_classes:
            raise _too_many(name, max_classes)
        integers = list(range(int(numeric.minimum), int(numeric.maximum) + 1))
    else:
        raise InvalidConfigError(
            f"label {name!r} has fractional values: a classification label needs classes "
            "(use problem_type regression for a continuous target)"
        )
    return _limited(name, [str(value) for value in integers], max_classes)


def _limited(name: str, classes: list[str], max_classes: int) -> list[str]:
    if len(classes) > max_classes:
        raise _too_many(name, max_classes)
    return classes


def _too_many(name: str, max_classes: int) -> InvalidConfigError:
    return InvalidConfigError(
        f"label {name!r} has more than {max_classes} distinct values "
        "(transform.vocabulary_max_size): is it really a class label?"
    )
