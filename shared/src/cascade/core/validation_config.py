"""Validation settings of one dataset: the ``validation`` section of its pipeline config.

Thresholds here seed the schema inferred from a dataset's first accepted file (drift
comparators, presence, domains); after that the stored schema is the source of truth
for per-feature constraints, and a user edits the schema to change them. Severities
always come from here: they decide which anomalies block a file.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

__all__ = ["BeamRouting", "Check", "Severities", "Severity", "ValidationConfig"]

MIB = 1024 * 1024
GIB = 1024 * MIB


class Severity(StrEnum):
    """What an anomaly of a check does (docs/validation.md, "Policy"): ``error``
    quarantines the file (a schema skew or broken data: a person investigates);
    ``retrain`` accepts it, records and alerts, and retrains on all accepted data with
    it (a value skew: the world moved); ``warning`` accepts it with a note; ``ignore``
    drops the check."""

    ERROR = "error"
    RETRAIN = "retrain"
    WARNING = "warning"
    IGNORE = "ignore"


class Check(StrEnum):
    """The families of anomalies, each with one configurable severity."""

    MISSING_FEATURE = "missing_feature"
    UNEXPECTED_FEATURE = "unexpected_feature"
    TYPE = "type"
    PRESENCE = "presence"
    VALUE_COUNT = "value_count"
    DOMAIN = "domain"
    RANGE = "range"
    NAN_INF = "nan_inf"
    DRIFT = "drift"
    EXAMPLE_COUNT = "example_count"
    MISSING_SHARE = "missing_share"
    """A feature's share of missing values rose (a value skew)."""
    LABEL_SHIFT = "label_shift"
    """The label's distribution moved (a value skew)."""
    UNSEEN_VALUES = "unseen_values"
    """A high-cardinality string feature (no domain) has a large share of unseen values."""
    EXTREME_DRIFT = "extreme_drift"
    """A drift so large it looks like a broken upstream (units, scale, an emptied column)."""
    FEATURE_COUNT = "feature_count"
    """A file with more columns than ``validation.max_features``."""


class Severities(BaseModel):
    """Severity per check. Defaults block what breaks training and note what may not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    missing_feature: Severity = Severity.ERROR
    unexpected_feature: Severity = Severity.WARNING
    type: Severity = Severity.ERROR
    presence: Severity = Severity.ERROR
    value_count: Severity = Severity.ERROR
    domain: Severity = Severity.ERROR
    range: Severity = Severity.ERROR
    nan_inf: Severity = Severity.ERROR
    drift: Severity = Severity.RETRAIN
    example_count: Severity = Severity.WARNING
    missing_share: Severity = Severity.RETRAIN
    label_shift: Severity = Severity.RETRAIN
    unseen_values: Severity = Severity.RETRAIN
    extreme_drift: Severity = Severity.ERROR
    feature_count: Severity = Severity.ERROR

    def of(self, check: Check) -> Severity:
        severity: Severity = getattr(self, check.value)
        return severity


class BeamRouting(BaseModel):
    """When a file's statistics run as an Apache Beam job instead of in the function
    (docs/beam.md, "Routing"): ``always``, or a file larger than ``above_bytes`` (never
    when it is null, the default). ``block_bytes`` is the size of the byte ranges the
    pipeline cuts a text file into (one range per worker task).

    Strict types: ``always: "yes"`` or ``above_bytes: true`` are refused, not read as
    ``True`` or ``1``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    above_bytes: StrictInt | None = Field(
        None,
        gt=0,
        le=1 << 62,
        description="Files larger than this many bytes are summarised by Beam; null: none.",
    )
    always: StrictBool = Field(
        False, description="Every file of the dataset is summarised by Beam."
    )
    block_bytes: StrictInt = Field(
        64 * MIB,
        ge=64 * 1024,
        le=4 * GIB,
        description="Bytes of one range of a text file read by one Beam worker task.",
    )

    def routes(self, size: int) -> bool:
        """Whether a file of ``size`` bytes goes to Beam."""
        return self.always or (self.above_bytes is not None and size > self.above_bytes)


class ValidationConfig(BaseModel):
    """How files are read, summarised and judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_size_bytes: int = Field(
        2 * GIB, gt=0, description="Larger objects are rejected before any byte is read."
    )
    max_uncompressed_bytes: int = Field(
        20 * GIB, gt=0, description="Limit on the decompressed size of a gzip file."
    )
    read_block_bytes: int = Field(
        8 * MIB,
        ge=64 * 1024,
        le=256 * MIB,
        description="CSV/NDJSON bytes parsed per batch: bounds memory, whatever the file size.",
    )
    parquet_batch_rows: int = Field(65536, ge=1024, description="Rows per Parquet batch.")
    csv_delimiter: str = Field(",", min_length=1, max_length=1)
    csv_newlines_in_values: bool = Field(
        False,
        description="Allow quoted values that contain newlines (slower, single-threaded parse).",
    )
    max_tracked_values: int = Field(
        10000,
        ge=10,
        description="Distinct string values counted exactly per feature; beyond, counts are "
        "the most frequent values only and the feature is marked truncated.",
    )
    top_values: int = Field(20, ge=1, description="Top values listed in statistics.")
    histogram_buckets: int = Field(10, ge=2, description="Buckets of the standard histogram.")
    drift_min_examples: int = Field(
        200, ge=1, description="Files with fewer examples skip drift checks: too noisy to judge."
    )
    drift_bins: int = Field(
        20, ge=2, description="Quantile bins of the baseline used for Jensen-Shannon divergence."
    )
    jensen_shannon_threshold: float = Field(
        0.1, gt=0, le=1, description="Numeric drift limit (base-2 JS divergence, 0..1)."
    )
    l_infinity_threshold: float = Field(
        0.1, gt=0, le=1, description="Categorical drift limit (largest change in a share)."
    )
    numeric_drift_measure: Literal["ks", "jensen_shannon"] = Field(
        "ks",
        description="Numeric drift measure: 'ks' (two-sample Kolmogorov-Smirnov statistic, "
        "limit ks_threshold) or 'jensen_shannon' (TFDV's comparator, limit from the schema's "
        "jensen_shannon_divergence). The schema's comparator switches a feature's check on.",
    )
    ks_threshold: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Numeric drift limit: the largest gap between the two cumulative "
        "distributions (0..1).",
    )
    drift_significance: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="Noise floor of the KS, missing-share and label checks: a change must "
        "also be one that two samples of these sizes from one distribution reach with at "
        "most this probability.",
    )
    missing_share_threshold: float = Field(
        0.02,
        gt=0,
        le=1,
        description="A feature's share of missing values rising by more than this (0.02: "
        "two points) is a value skew.",
    )
    label_shift_threshold: float = Field(
        0.05,
        gt=0,
        le=1,
        description="The label's distribution moving by more than this (a class's share, or "
        "the KS statistic of a numeric label) is a label shift.",
    )
    unseen_share_threshold: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Strings without a domain: the share of a file's values unseen in the "
        "baseline exceeding the share the baseline predicts by more than this.",
    )
    extreme_drift_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="KS statistic above which a numeric drift whose typical magnitude also "
        "changed extreme_scale_ratio-fold looks like a broken upstream (units, scale).",
    )
    extreme_scale_ratio: float = Field(
        10.0,
        gt=1,
        description="Ratio of typical magnitudes (5th/95th percentiles) marking a units or "
        "scale change.",
    )
    max_domain_size: int = Field(
        100, ge=1, description="String features with at most this many values get a domain."
    )
    max_features: int = Field(
        1000,
        ge=1,
        description="A file with more columns than this is a feature_count finding (an error "
        "by default: quarantined), judged from its header before any statistics are computed.",
    )
    domain_min_values: int = Field(
        100, ge=1, description="A domain is only inferred from at least this many values."
    )
    max_domain_unique_ratio: float = Field(
        0.5, gt=0, le=1, description="...and at most this many distinct values per value."
    )
    min_domain_mass: float = Field(
        0.99, gt=0, le=1, description="Share of values that must be in the domain."
    )
    presence_tolerance: float = Field(
        0.05, ge=0, le=1, description="Inferred min presence = first file's presence - this."
    )
    example_count_min_ratio: float = Field(
        0.1, gt=0, description="Fewer examples than this x the mean accepted file: anomaly."
    )
    example_count_max_ratio: float = Field(
        10.0, gt=0, description="More examples than this x the mean accepted file: anomaly."
    )
    severities: Severities = Field(default_factory=Severities)
    beam: BeamRouting = Field(
        default_factory=BeamRouting,
        description="When statistics run as an Apache Beam job (docs/beam.md).",
    )

    @model_validator(mode="after")
    def _ratios_ordered(self) -> ValidationConfig:
        if self.example_count_min_ratio >= self.example_count_max_ratio:
            raise ValueError("example_count_min_ratio must be below example_count_max_ratio")
        return self
