"""Data validation: statistics, schema, anomalies and drift in TFDV's formats.

``validate_file`` judges one file; ``compute_statistics``, ``infer_schema`` and
``validate_statistics`` are its parts. Storage lives in ``baseline_store`` and in the
step, ``cascade.steps.validate``. See docs/validation.md.
"""

from cascade.core.validation_config import Check, Severities, Severity, ValidationConfig
from cascade.validation.anomalies import Baseline, ValidationResult, validate_statistics
from cascade.validation.names import FileFormat, check_landed_name, file_format_of
from cascade.validation.schema import infer_schema, parse_schema_text, schema_to_text
from cascade.validation.source import DataSource
from cascade.validation.statistics import (
    compute_statistics,
    merge_statistics,
    statistics_proto,
    summary_of_statistics,
)
from cascade.validation.validator import FileValidation, validate_file

__all__ = [
    "Baseline",
    "Check",
    "DataSource",
    "FileFormat",
    "FileValidation",
    "Severities",
    "Severity",
    "ValidationConfig",
    "ValidationResult",
    "check_landed_name",
    "compute_statistics",
    "file_format_of",
    "infer_schema",
    "merge_statistics",
    "parse_schema_text",
    "schema_to_text",
    "statistics_proto",
    "summary_of_statistics",
    "validate_file",
    "validate_statistics",
]
