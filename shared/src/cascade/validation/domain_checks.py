"""Value-level checks against a feature's domain: strings (its own ``string_domain`` or a
top-level one it names by ``domain``, as TFDV schemas do), booleans (``bool_domain``),
numeric ranges, NaN and Inf, and a fixed ``shape``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cascade.core.validation_config import Check
from cascade.validation.findings import Finding, anomaly
from cascade.validation.summaries import FeatureSummary
from cascade.validation.tfmd import anomalies_pb2, schema_pb2

__all__ = [
    "bool_findings",
    "domain_findings",
    "nan_inf_findings",
    "range_findings",
    "shape_findings",
]

Type = anomalies_pb2.AnomalyInfo
_LISTED_VALUES = 5
_UNLIMITED_VALUES = 1 << 30


def _string_domain(expected: Any, named: dict[str, Any]) -> Any | None:
    if expected.HasField("string_domain"):
        return expected.string_domain
    if expected.WhichOneof("domain_info") == "domain":
        return named.get(expected.domain)
    return None


def domain_findings(
    expected: Any, found: FeatureSummary, named: dict[str, Any] | None = None
) -> Iterator[Finding]:
    """Strings outside the feature's ``string_domain`` (or the schema's top-level domain
    it names, ``named``) beyond ``1 - min_domain_mass``."""
    named = named or {}
    if expected.WhichOneof("domain_info") == "domain" and expected.domain not in named:
        yield anomaly(
            expected.name,
            Check.DOMAIN,
            Type.INVALID_DOMAIN_SPECIFICATION,
            "Invalid domain specification",
            f"The schema names the domain {expected.domain!r}, which it does not define "
            f"(top-level string_domain: {', '.join(sorted(named)) or 'none'}).",
        )
        return
    string_domain = _string_domain(expected, named)
    if found.strings is None or string_domain is None:
        return
    domain = set(string_domain.value)
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


def bool_findings(expected: Any, found: FeatureSummary) -> Iterator[Finding]:
    """Values a ``bool_domain`` does not allow: integers other than 0 and 1; strings other
    than its ``true_value`` and ``false_value`` (when it names them)."""
    if not expected.HasField("bool_domain"):
        return
    numeric = found.numeric
    if numeric is not None and numeric.count and expected.type == schema_pb2.INT:
        if numeric.minimum < 0:
            yield anomaly(
                expected.name,
                Check.DOMAIN,
                Type.BOOL_TYPE_SMALL_INT,
                "Non-boolean values",
                f"Integers smaller than 0 in a boolean feature: {numeric.minimum:.6g}.",
            )
        if numeric.maximum > 1:
            yield anomaly(
                expected.name,
                Check.DOMAIN,
                Type.BOOL_TYPE_BIG_INT,
                "Non-boolean values",
                f"Integers larger than 1 in a boolean feature: {numeric.maximum:.6g}.",
            )
    domain = expected.bool_domain
    allowed = {value for value in (domain.true_value, domain.false_value) if value}
    if found.strings is None or not allowed:
        return
    outside = [
        value for value, _ in found.strings.value_counts(_UNLIMITED_VALUES) if value not in allowed
    ]
    if outside:
        listed = ", ".join(repr(value) for value in outside[:_LISTED_VALUES])
        yield anomaly(
            expected.name,
            Check.DOMAIN,
            Type.BOOL_TYPE_UNEXPECTED_STRING,
            "Non-boolean values",
            f"Values other than {sorted(allowed)} in a boolean feature: {listed}.",
        )


def shape_findings(expected: Any, found: FeatureSummary, examples: int) -> Iterator[Finding]:
    """A fixed ``shape``: every example holds exactly the product of its dimensions values.
    A row of a file holds one value per column, so only a shape of one value fits, and
    then no example may miss it."""
    if not expected.HasField("shape"):
        return
    size = 1
    for dim in expected.shape.dim:
        size *= dim.size
    if size != 1:
        yield anomaly(
            expected.name,
            Check.VALUE_COUNT,
            Type.INVALID_FEATURE_SHAPE,
            "Invalid shape",
            f"The schema's shape {[dim.size for dim in expected.shape.dim]} needs {size} "
            "values per example; a row of a data file holds one.",
        )
        return
    missing = examples - found.presence.num_non_missing
    if missing > 0:
        yield anomaly(
            expected.name,
            Check.VALUE_COUNT,
            Type.INVALID_FEATURE_SHAPE,
            "Invalid shape",
            f"The schema gives the feature a fixed shape, but {missing} of {examples} "
            "examples miss it.",
        )
