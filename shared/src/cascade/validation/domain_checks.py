"""Value-level checks against a feature's domain: strings, numeric ranges, NaN and Inf."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cascade.core.validation_config import Check
from cascade.validation.findings import Finding, anomaly
from cascade.validation.summaries import FeatureSummary
from cascade.validation.tfmd import anomalies_pb2, schema_pb2

__all__ = ["domain_findings", "nan_inf_findings", "range_findings"]

Type = anomalies_pb2.AnomalyInfo
_LISTED_VALUES = 5
_UNLIMITED_VALUES = 1 << 30


def domain_findings(expected: Any, found: FeatureSummary) -> Iterator[Finding]:
    """Strings outside the feature's ``string_domain`` beyond ``1 - min_domain_mass``."""
    if found.strings is None or not expected.HasField("string_domain"):
        return
    domain = set(expected.string_domain.value)
    counts = found.strings.value_counts(_UNLIMITED_VALUES)
    total = sum(count for _, count in counts)
    outside = [(value, count) for value, count in counts if value not in domain]
    outside_count = sum(count for _, count in outside)
    if not total or not outside_count:
        return
    min_mass = (
        expected.distribution_constraints.min_domain_mass
        if expected.HasField("distribution_constraints")
        else 1.0
    )
    if min_mass < 1.0 and outside_count / total <= 1.0 - min_mass:
        return
    listed = ", ".join(
        f"{value!r} (~{100 * count / total:.0f}%)" for value, count in outside[:_LISTED_VALUES]
    )
    more = f" and {len(outside) - _LISTED_VALUES} more" if len(outside) > _LISTED_VALUES else ""
    yield anomaly(
        expected.name,
        Check.DOMAIN,
        Type.ENUM_TYPE_UNEXPECTED_STRING_VALUES,
        "Unexpected string values",
        f"Examples contain values missing from the schema: {listed}{more}.",
    )


def range_findings(expected: Any, found: FeatureSummary) -> Iterator[Finding]:
    """Numbers below ``min`` or above ``max`` of the int or float domain."""
    numeric = found.numeric
    if numeric is None or not numeric.count:
        return
    if expected.type == schema_pb2.INT and expected.HasField("int_domain"):
        domain, small, big, kind = (
            expected.int_domain,
            Type.INT_TYPE_SMALL_INT,
            Type.INT_TYPE_BIG_INT,
            "int",
        )
    elif expected.type == schema_pb2.FLOAT and expected.HasField("float_domain"):
        domain, small, big, kind = (
            expected.float_domain,
            Type.FLOAT_TYPE_SMALL_FLOAT,
            Type.FLOAT_TYPE_BIG_FLOAT,
            "float",
        )
    else:
        return
    if domain.HasField("min") and numeric.minimum < domain.min:
        yield anomaly(
            expected.name,
            Check.RANGE,
            small,
            "Out-of-range values",
            f"Unexpectedly small {kind} value: {numeric.minimum:.6g} (domain minimum "
            f"{domain.min:.6g}).",
        )
    if domain.HasField("max") and numeric.maximum > domain.max:
        yield anomaly(
            expected.name,
            Check.RANGE,
            big,
            "Out-of-range values",
            f"Unexpectedly large {kind} value: {numeric.maximum:.6g} (domain maximum "
            f"{domain.max:.6g}).",
        )


def nan_inf_findings(expected: Any, found: FeatureSummary) -> Iterator[Finding]:
    """NaN or infinite values in a float feature whose domain disallows them."""
    numeric = found.numeric
    if numeric is None or not expected.HasField("float_domain"):
        return
    if expected.float_domain.disallow_nan and numeric.nan:
        yield anomaly(
            expected.name,
            Check.NAN_INF,
            Type.FLOAT_TYPE_HAS_NAN,
            "Invalid values",
            f"Float feature has NaN values ({numeric.nan} of them).",
        )
    if expected.float_domain.disallow_inf and numeric.inf:
        yield anomaly(
            expected.name,
            Check.NAN_INF,
            Type.FLOAT_TYPE_HAS_INF,
            "Invalid values",
            f"Float feature has Inf values ({numeric.inf} of them).",
        )
