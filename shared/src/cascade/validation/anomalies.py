"""Anomalies: a file's statistics judged against the schema and the baseline.

The six questions, in the order a person asks them: is each expected feature present;
are there unexpected ones; is each of the expected type; in enough examples; with the
expected number of values; and is each distribution close enough to the baseline's
(drift, and the value skews: missing share, label shift, unseen values, extreme drift;
``drift_checks``). Plus out-of-domain strings, out-of-range numbers, NaN/Inf, and a
sudden change in the number of examples. Each finding carries TFDV's anomaly type and
wording, and the severity its check has in the pipeline config; the result is a TFMD
``Anomalies``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cascade.core.validation_config import Check, Severity, ValidationConfig
from cascade.validation.domain_checks import (
    bool_findings,
    domain_findings,
    nan_inf_findings,
    range_findings,
    shape_findings,
)
from cascade.validation.drift_checks import (
    JENSEN_SHANNON,
    KS,
    L_INFINITY,
    DriftMeasurement,
    SampleSizes,
    judge_distribution,
)
from cascade.validation.feature_columns import FeatureKind
from cascade.validation.findings import Finding, anomaly
from cascade.validation.schema import SCHEMA_TYPES
from cascade.validation.summaries import DatasetSummary, FeatureSummary
from cascade.validation.tfmd import anomalies_pb2, schema_pb2

__all__ = ["Baseline", "DriftMeasurement", "ValidationResult", "validate_statistics"]

Type = anomalies_pb2.AnomalyInfo
Measurement = anomalies_pb2.DriftSkewInfo.Measurement
_MEASUREMENT_TYPES = {
    L_INFINITY: Measurement.L_INFTY,
    JENSEN_SHANNON: Measurement.JENSEN_SHANNON_DIVERGENCE,
    KS: Measurement.UNKNOWN,  # TFMD names no KS measurement
}
_DISTRIBUTION_CHECKS = frozenset({Check.DRIFT, Check.LABEL_SHIFT})
"""Measurements written to ``drift_skew_info``: distances between distributions."""
_INACTIVE_STAGES = {
    schema_pb2.PLANNED,
    schema_pb2.ALPHA,
    schema_pb2.DEBUG_ONLY,
    schema_pb2.DEPRECATED,
    schema_pb2.DISABLED,
}


@dataclass(frozen=True)
class Baseline:
    """The statistics of all data accepted so far, and how many files they cover."""

    summary: DatasetSummary
    files: int


@dataclass(frozen=True)
class ValidationResult:
    """``drift``: every distribution measurement taken (each with its check, measure,
    value and threshold); ``notes``: what was reported without a finding (batch
    identifiers) or could not be checked, and why; ``batch_identifiers``: features
    found to identify the batch, not drift-checked."""

    findings: list[Finding]
    drift: list[DriftMeasurement] = field(default_factory=list)
    anomalies: Any = None
    notes: list[str] = field(default_factory=list)
    batch_identifiers: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity is Severity.WARNING]

    @property
    def value_skews(self) -> list[Finding]:
        """Findings of severity ``retrain``: the file is accepted and retrains the model."""
        return [finding for finding in self.findings if finding.severity is Severity.RETRAIN]

    @property
    def accepted(self) -> bool:
        return not self.errors


def _active(feature: Any) -> bool:
    inactive = bool(feature.deprecated) or feature.lifecycle_stage in _INACTIVE_STAGES
    return not inactive


def _requires_presence(feature: Any) -> bool:
    return bool(feature.presence.min_count > 0 or feature.presence.min_fraction > 0)


def validate_statistics(
    current: DatasetSummary,
    schema: Any,
    baseline: Baseline | None,
    config: ValidationConfig,
    *,
    label: str | None = None,
) -> ValidationResult:
    """Judge ``current`` (one file) against ``schema`` and ``baseline`` (None at first).

    ``label``: the label's feature, whose distribution is judged as a label shift.
    """
    findings: list[Finding] = []
    drift: list[DriftMeasurement] = []
    notes: list[str] = []
    batch_identifiers: list[str] = []
    schema_names = {feature.name for feature in schema.feature}
    named_domains = {domain.name: domain for domain in schema.string_domain}
    for expected in schema.feature:
        if not _active(expected):
            continue
        found = current.features.get(expected.name)
        if found is None:
            if _requires_presence(expected):
                findings.append(_missing_column(expected.name))
            continue
        findings.extend(_feature_findings(expected, found, current.num_examples, named_domains))
        previous = baseline.summary.features.get(expected.name) if baseline else None
        if previous is None or baseline is None or not _drift_applies(current, config):
            continue
        sizes = SampleSizes(current.num_examples, baseline.summary.num_examples, baseline.files)
        judged = judge_distribution(
            expected, found, previous, sizes, config, is_label=expected.name == label
        )
        drift.extend(judged.measurements)
        findings.extend(judged.findings)
        notes.extend(judged.notes)
        if judged.batch_identifier:
            batch_identifiers.append(expected.name)
    for name in current.features:
        if name not in schema_names:
            findings.append(
                anomaly(
                    name,
                    Check.UNEXPECTED_FEATURE,
                    Type.SCHEMA_NEW_COLUMN,
                    "New column",
                    "New column (column in data but not in schema)",
                )
            )
    findings.extend(_example_count_findings(current, schema, baseline))
    graded = [finding.graded(config.severities.of(finding.check)) for finding in findings]
    kept = [finding for finding in graded if finding.severity is not Severity.IGNORE]
    result = ValidationResult(kept, drift, None, notes, batch_identifiers)
    return ValidationResult(kept, drift, anomalies_proto(result, schema), notes, batch_identifiers)


def _drift_applies(current: DatasetSummary, config: ValidationConfig) -> bool:
    return current.num_examples >= config.drift_min_examples


def _missing_column(name: str) -> Finding:
    return anomaly(
        name,
        Check.MISSING_FEATURE,
        Type.SCHEMA_MISSING_COLUMN,
        "Column dropped",
        "The feature was present in fewer examples than expected: the column is "
        "missing from the data.",
    )


def _same_type(expected: Any, found: FeatureSummary) -> bool:
    if found.kind is FeatureKind.NONE:
        return False
    if expected.type == schema_pb2.FLOAT and found.kind is FeatureKind.INT:
        return True
    return bool(SCHEMA_TYPES[found.kind] == expected.type)


def _feature_findings(
    expected: Any, found: FeatureSummary, examples: int, named_domains: dict[str, Any]
) -> Iterator[Finding]:
    yield from _presence_findings(expected, found, examples)
    yield from shape_findings(expected, found, examples)
    if found.kind is FeatureKind.NONE:
        return
    if not _same_type(expected, found):
        yield _type_finding(expected, found)
        return
    yield from _value_count_findings(expected, found)
    yield from domain_findings(expected, found, named_domains)
    yield from bool_findings(expected, found)
    yield from range_findings(expected, found)
    yield from nan_inf_findings(expected, found)


def _presence_findings(expected: Any, found: FeatureSummary, examples: int) -> Iterator[Finding]:
    present = found.presence.num_non_missing
    name = expected.name
    if present == 0 and _requires_presence(expected):
        yield anomaly(
            name,
            Check.PRESENCE,
            Type.FEATURE_TYPE_NOT_PRESENT,
            "Column dropped",
            "The feature was not present in any examples.",
        )
        return
    fraction = present / examples if examples else 0.0
    minimum = expected.presence.min_fraction
    if minimum and fraction < minimum:
        yield anomaly(
            name,
            Check.PRESENCE,
            Type.FEATURE_TYPE_LOW_FRACTION_PRESENT,
            "Column dropped",
            "The feature was present in fewer examples than expected: minimum "
            f"fraction = {minimum:.6g}, actual = {fraction:.6g}",
        )
    if expected.presence.min_count and present < expected.presence.min_count:
        yield anomaly(
            name,
            Check.PRESENCE,
            Type.FEATURE_TYPE_LOW_NUMBER_PRESENT,
            "Column dropped",
            "The feature was present in fewer examples than expected: minimum "
            f"count = {expected.presence.min_count}, actual = {present}",
        )


def _type_finding(expected: Any, found: FeatureSummary) -> Finding:
    expected_name = schema_pb2.FeatureType.Name(expected.type)
    actual_name = {FeatureKind.INT: "INT", FeatureKind.FLOAT: "FLOAT"}.get(found.kind, "BYTES")
    description = f"Expected data of type: {expected_name} but got {actual_name}"
    if expected.type == schema_pb2.INT and found.kind is FeatureKind.STRING:
        return anomaly(
            expected.name,
            Check.TYPE,
            Type.INT_TYPE_NOT_INT_STRING,
            "Non-integer values",
            description,
        )
    if expected.type == schema_pb2.FLOAT and found.kind is FeatureKind.STRING:
        return anomaly(
            expected.name,
            Check.TYPE,
            Type.FLOAT_TYPE_STRING_NOT_FLOAT,
            "Non-float values",
            description,
        )
    return anomaly(
        expected.name, Check.TYPE, Type.UNEXPECTED_DATA_TYPE, "Unexpected data type", description
    )


def _value_count_findings(expected: Any, found: FeatureSummary) -> Iterator[Finding]:
    if not expected.HasField("value_count") or not found.presence.num_non_missing:
        return
    limits, presence = expected.value_count, found.presence
    if limits.min and presence.min_num_values < limits.min:
        yield anomaly(
            expected.name,
            Check.VALUE_COUNT,
            Type.FEATURE_TYPE_LOW_NUMBER_VALUES,
            "Missing values",
            f"Some examples have fewer values than expected: minimum {limits.min}, "
            f"actual {presence.min_num_values}.",
        )
    if limits.max and presence.max_num_values > limits.max:
        yield anomaly(
            expected.name,
            Check.VALUE_COUNT,
            Type.FEATURE_TYPE_HIGH_NUMBER_VALUES,
            "Superfluous values",
            f"Some examples have more values than expected: maximum {limits.max}, "
            f"actual {presence.max_num_values}.",
        )


def _example_count_findings(
    current: DatasetSummary, schema: Any, baseline: Baseline | None
) -> Iterator[Finding]:
    comparator = schema.dataset_constraints.num_examples_drift_comparator
    if baseline is None or not baseline.files or not baseline.summary.num_examples:
        return
    typical = baseline.summary.num_examples / baseline.files
    ratio = current.num_examples / typical
    detail = (
        f"{current.num_examples} examples, {ratio:.3g} times the {typical:.6g} of the "
        "mean accepted file"
    )
    if comparator.min_fraction_threshold and ratio < comparator.min_fraction_threshold:
        yield anomaly(
            "",
            Check.EXAMPLE_COUNT,
            Type.COMPARATOR_LOW_NUM_EXAMPLES,
            "Low num examples in current dataset versus the previous span.",
            f"The number of examples fell: {detail} (minimum ratio "
            f"{comparator.min_fraction_threshold:.6g}).",
        )
    if comparator.max_fraction_threshold and ratio > comparator.max_fraction_threshold:
        yield anomaly(
            "",
            Check.EXAMPLE_COUNT,
            Type.COMPARATOR_HIGH_NUM_EXAMPLES,
            "High num examples in current dataset versus the previous span.",
            f"The number of examples rose: {detail} (maximum ratio "
            f"{comparator.max_fraction_threshold:.6g}).",
        )


def _info(findings: list[Finding], info: Any) -> None:
    for finding in findings:
        info.reason.add(
            type=finding.anomaly_type,
            short_description=finding.short_description,
            description=finding.description,
        )
    worst = (
        Severity.ERROR
        if any(f.severity is Severity.ERROR for f in findings)
        else (Severity.WARNING)
    )
    info.severity = Type.ERROR if worst is Severity.ERROR else Type.WARNING
    if len(findings) == 1:
        info.short_description = findings[0].short_description
        info.description = findings[0].description
    else:
        info.short_description = "Multiple errors"
        info.description = " ".join(finding.description for finding in findings)


def anomalies_proto(result: ValidationResult, schema: Any) -> Any:
    """The TFMD ``Anomalies`` of ``result``, with the schema it was judged against."""
    proto = anomalies_pb2.Anomalies()
    proto.anomaly_name_format = anomalies_pb2.Anomalies.SERIALIZED_PATH
    proto.baseline.CopyFrom(schema)
    by_feature: dict[str, list[Finding]] = {}
    for finding in result.findings:
        by_feature.setdefault(finding.feature, []).append(finding)
    for feature, findings in by_feature.items():
        if feature:
            info = proto.anomaly_info[feature]
            info.path.step.append(feature)
            _info(findings, info)
        else:
            _info(findings, proto.dataset_anomaly_info)
    for measurement in result.drift:
        if measurement.check not in _DISTRIBUTION_CHECKS:
            continue
        drift_info = proto.drift_skew_info.add()
        drift_info.path.step.append(measurement.feature)
        drift_info.drift_measurements.add(
            type=_MEASUREMENT_TYPES.get(measurement.measure, Measurement.UNKNOWN),
            value=measurement.value,
            threshold=measurement.threshold,
        )
    return proto
