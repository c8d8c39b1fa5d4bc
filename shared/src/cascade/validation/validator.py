"""Validate one file end to end, without storage: read, summarise, judge.

The step (``cascade.steps.validate``) loads the schema and baseline, calls
``validate_file``, and stores what it returns; benchmarks and tests call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cascade.core.validation_config import ValidationConfig
from cascade.validation.anomalies import Baseline, ValidationResult, validate_statistics
from cascade.validation.schema import infer_schema, schema_column_names
from cascade.validation.source import DataSource
from cascade.validation.statistics import compute_statistics, statistics_proto
from cascade.validation.summaries import DatasetSummary

__all__ = ["FileValidation", "validate_file"]


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
) -> FileValidation:
    """Statistics, schema (given or inferred from this file) and anomalies.

    ``cascade.report.validation_page`` renders the result as the run's validation page.
    """
    float_features, string_features = schema_column_names(schema)
    summary = compute_statistics(
        source, config, float_features=float_features, string_features=string_features
    )
    inferred = schema is None
    judged_schema = infer_schema(summary, config) if schema is None else schema
    result = validate_statistics(summary, judged_schema, baseline, config)
    return FileValidation(
        source_uri=source.uri,
        summary=summary,
        statistics=statistics_proto(summary, config, name=source.uri),
        schema=judged_schema,
        schema_inferred=inferred,
        result=result,
        baseline_summary=baseline.summary if baseline is not None else None,
    )
