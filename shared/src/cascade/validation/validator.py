"""Validate one file end to end, without storage: read, summarise, judge.

The step (``cascade.steps.validate``) loads the schema and baseline, calls
``validate_file``, and stores what it returns; benchmarks and tests call it directly.

A file wider than ``validation.max_features`` is refused from its header, before any
statistics are computed, when that check is an error (the default); otherwise its
statistics are computed and the exact column count is judged with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cascade.core.validation_config import Check, Severity, ValidationConfig
from cascade.validation.anomalies import (
    Baseline,
    ValidationResult,
    anomalies_proto,
    validate_statistics,
)
from cascade.validation.feature_count import feature_count_finding, header_column_count
from cascade.validation.findings import Finding
from cascade.validation.schema import infer_schema, schema_column_names
from cascade.validation.source import DataSource
from cascade.validation.statistics import compute_statistics, statistics_proto
from cascade.validation.summaries import DatasetSummary

__all__ = ["FileValidation", "judge_summary", "refused_by_header", "validate_file"]


@dataclass(frozen=True)
class FileValidation:
    """``schema_inferred`` is True when no schema existed and this file's was inferred;
    ``baseline_summary`` is what the file was judged against (None for a first file)."""

    source_uri: str
    summary: DatasetSummary
    statistics: Any
    schema: Any
    schema_inferred: bool
    result: ValidationResult
    baseline_summary: DatasetSummary | None

    @property
    def accepted(self) -> bool:
        return self.result.accepted


def validate_file(
    source: DataSource,
    *,
    schema: Any | None,
    baseline: Baseline | None,
    config: ValidationConfig,
    label: str | None = None,
) -> FileValidation:
    """Statistics, schema (given or inferred from this file) and anomalies; ``label``
    (the pipeline config's) is judged for label shift instead of feature drift.

    ``cascade.report.validation_page`` renders the result as the run's validation page.
    """
    refused = refused_by_header(source, config)
    if refused is not None:
        return _without_statistics(source, refused, schema, baseline, config)
    float_features, string_features = schema_column_names(schema)
    summary = compute_statistics(
        source, config, float_features=float_features, string_features=string_features
    )
    return judge_summary(
        source.uri, summary, schema=schema, baseline=baseline, config=config, label=label
    )


def judge_summary(
    source_uri: str,
    summary: DatasetSummary,
    *,
    schema: Any | None,
    baseline: Baseline | None,
    config: ValidationConfig,
    label: str | None = None,
) -> FileValidation:
    """Judge a file's statistics however they were computed: here (``validate_file``) or
    by the Beam pipeline (``cascade.steps.validate``'s completion of a Beam job)."""
    inferred = schema is None
    judged_schema = infer_schema(summary, config) if schema is None else schema
    result = validate_statistics(summary, judged_schema, baseline, config, label=label)
    too_many = feature_count_finding(source_uri, len(summary.features), config, from_header=False)
    if too_many is not None:
        result = _with_finding(result, too_many, judged_schema, config)
    return FileValidation(
        source_uri=source_uri,
        summary=summary,
        statistics=statistics_proto(summary, config, name=source_uri),
        schema=judged_schema,
        schema_inferred=inferred,
        result=result,
        baseline_summary=baseline.summary if baseline is not None else None,
    )


def refused_by_header(source: DataSource, config: ValidationConfig) -> Finding | None:
    """The ``feature_count`` error of a file whose header alone is too wide."""
    if config.severities.of(Check.FEATURE_COUNT) is not Severity.ERROR:
        return None  # not blocking: the exact count is judged after the statistics
    columns = header_column_count(source, config)
    if columns is None:
        return None
    return feature_count_finding(source.uri, columns, config, from_header=True)


def _with_finding(
    result: ValidationResult, finding: Finding, schema: Any, config: ValidationConfig
) -> ValidationResult:
    graded = finding.graded(config.severities.of(finding.check))
    if graded.severity is Severity.IGNORE:
        return result
    findings = [*result.findings, graded]
    return replace(
        result,
        findings=findings,
        anomalies=anomalies_proto(replace(result, findings=findings), schema),
    )


def _without_statistics(
    source: DataSource,
    finding: Finding,
    schema: Any | None,
    baseline: Baseline | None,
    config: ValidationConfig,
) -> FileValidation:
    """A file refused before its statistics: empty statistics, the one finding."""
    summary = DatasetSummary()
    judged_schema = infer_schema(summary, config) if schema is None else schema
    result = _with_finding(ValidationResult(findings=[]), finding, judged_schema, config)
    return FileValidation(
        source_uri=source.uri,
        summary=summary,
        statistics=statistics_proto(summary, config, name=source.uri),
        schema=judged_schema,
        schema_inferred=schema is None,
        result=result,
        baseline_summary=baseline.summary if baseline is not None else None,
    )
