"""The dataset schema: inferred from the first accepted file, then owned by the user.

Stored as a tensorflow-metadata ``Schema`` in text format (``schema.pbtxt``), the file
TFDV writes and users edit. Inference records, per feature: type, presence (the first
file's fraction minus a tolerance), value counts, a string domain for low-cardinality
strings, NaN/Inf bans for floats that had none, and drift comparators (Jensen-Shannon
for numbers, L-infinity for categories); and for the dataset, how far the example count
of a file may stray from the mean accepted file.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import InvalidConfigError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.feature_columns import FeatureKind
from cascade.validation.summaries import DatasetSummary, FeatureSummary
from cascade.validation.tfmd import schema_pb2

__all__ = [
    "SCHEMA_TYPES",
    "inactive_reason",
    "infer_feature",
    "infer_schema",
    "parse_schema_text",
    "restricted_to_schema",
    "schema_column_names",
    "schema_feature_names",
    "schema_to_text",
]

SCHEMA_TYPES = {
    FeatureKind.INT: schema_pb2.INT,
    FeatureKind.FLOAT: schema_pb2.FLOAT,
    FeatureKind.STRING: schema_pb2.BYTES,
}
# TFDV skips features in these stages (and deprecated ones): not checked, not trained on.
_INACTIVE_STAGES = frozenset(
    {
        schema_pb2.PLANNED,
        schema_pb2.ALPHA,
        schema_pb2.DEBUG_ONLY,
        schema_pb2.DEPRECATED,
        schema_pb2.DISABLED,
    }
)


def infer_schema(summary: DatasetSummary, config: ValidationConfig) -> Any:
    """A schema describing ``summary``; thresholds come from ``config``."""
    schema = schema_pb2.Schema()
    for name, feature in summary.features.items():
        _infer_feature(schema, name, feature, summary.num_examples, config)
    comparator = schema.dataset_constraints.num_examples_drift_comparator
    comparator.min_fraction_threshold = config.example_count_min_ratio
    comparator.max_fraction_threshold = config.example_count_max_ratio
    return schema


def infer_feature(
    name: str, feature: FeatureSummary, examples: int, config: ValidationConfig
) -> Any:
    """The schema ``Feature`` inference gives ``feature`` (seen in ``examples`` examples)."""
    schema = schema_pb2.Schema()
    _infer_feature(schema, name, feature, examples, config)
    return schema.feature[0]


def _infer_feature(
    schema: Any, name: str, feature: FeatureSummary, examples: int, config: ValidationConfig
) -> None:
    proto = schema.feature.add(name=name)
    kind = feature.kind if feature.kind is not FeatureKind.NONE else FeatureKind.STRING
    proto.type = SCHEMA_TYPES[kind]
    presence = feature.presence
    fraction = presence.num_non_missing / examples if examples else 0.0
    proto.presence.min_fraction = max(
        math.floor((fraction - config.presence_tolerance) * 1000) / 1000, 0.0
    )
    proto.presence.min_count = 1
    if presence.num_non_missing and presence.max_num_values <= 1:
        proto.value_count.min = 1
        proto.value_count.max = 1
    elif presence.num_non_missing:
        proto.value_count.min = max(presence.min_num_values, 1)
    if feature.numeric is not None:
        proto.drift_comparator.jensen_shannon_divergence.threshold = config.jensen_shannon_threshold
        if kind is FeatureKind.FLOAT:
            proto.float_domain.disallow_nan = feature.numeric.nan == 0
            proto.float_domain.disallow_inf = feature.numeric.inf == 0
    if feature.strings is not None:
        _infer_domain(proto, feature, config)


def _infer_domain(proto: Any, feature: FeatureSummary, config: ValidationConfig) -> None:
    """Low-cardinality strings get a domain and a categorical drift comparator."""
    assert feature.strings is not None
    counts = feature.strings.value_counts(config.max_tracked_values)
    total = feature.presence.tot_num_values
    if feature.strings.truncated or not counts or len(counts) > config.max_domain_size:
        return
    if len(counts) < 2:
        # Constant in the first file: a batch identifier (the file's month, say), which
        # the next period would break, or a feature not yet seen varying. No domain.
        return
    if total < config.domain_min_values or len(counts) > config.max_domain_unique_ratio * total:
        return
    proto.string_domain.value.extend(sorted(value for value, _ in counts))
    proto.string_domain.is_categorical = schema_pb2.StringDomain.CATEGORICAL_YES
    proto.distribution_constraints.min_domain_mass = config.min_domain_mass
    proto.drift_comparator.infinity_norm.threshold = config.l_infinity_threshold


def schema_to_text(schema: Any, *, header: str = "") -> str:
    """Text format, led by ``#`` comment lines from ``header`` (where it came from)."""
    comments = "".join(f"# {line}\n" for line in header.splitlines() if line.strip())
    return comments + str(text_format.MessageToString(schema))


def parse_schema_text(text: str, *, where: str) -> Any:
    """Parse a stored (possibly hand-edited) schema; InvalidConfigError says what is wrong."""
    schema = schema_pb2.Schema()
    try:
        text_format.Parse(text, schema)
    except text_format.ParseError as error:
        raise InvalidConfigError(f"{where}: invalid schema text: {error}") from error
    names = [feature.name for feature in schema.feature]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidConfigError(f"{where}: features listed twice: {', '.join(duplicates)}")
    return schema


def schema_column_names(schema: Any | None) -> tuple[frozenset[str], frozenset[str]]:
    """The FLOAT and the BYTES features of ``schema`` (empty sets without a schema).

    Text files are read with these types, so that a float column that happens to hold
    whole numbers, or a string column of digits, is not mistaken for a type change.
    """
    if schema is None:
        return frozenset(), frozenset()
    floats = frozenset(f.name for f in schema.feature if f.type == schema_pb2.FLOAT)
    strings = frozenset(f.name for f in schema.feature if f.type == schema_pb2.BYTES)
    return floats, strings


def schema_feature_names(schema: Any) -> frozenset[str]:
    """Every feature the schema lists, whatever its lifecycle stage."""
    return frozenset(feature.name for feature in schema.feature)


def inactive_reason(feature: Any) -> str | None:
    """Why a schema feature is neither checked nor trained on; None when it is active."""
    if feature.deprecated:
        return "deprecated in the schema"
    if feature.lifecycle_stage in _INACTIVE_STAGES:
        stage = schema_pb2.LifecycleStage.Name(feature.lifecycle_stage)
        return f"lifecycle_stage {stage} in the schema"
    return None


def restricted_to_schema(summary: DatasetSummary, schema: Any) -> DatasetSummary:
    """``summary`` without the columns ``schema`` does not list.

    The baseline and the transform are the schema's: a column a file brings that the
    schema does not take (yet) is reported as a new column, never merged or fitted.
    Inactive (deprecated) features are kept: their statistics stay complete for the day
    the schema turns them on again; the transform leaves them out.
    """
    names = schema_feature_names(schema)
    if all(name in names for name in summary.features):
        return summary
    features = {name: found for name, found in summary.features.items() if name in names}
    return DatasetSummary(summary.num_examples, features)
