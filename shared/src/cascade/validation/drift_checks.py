"""Distribution checks of one feature against the baseline: drift and the value skews.

Per feature present in the file and in the baseline (docs/validation.md, "Drift"):

- a **batch identifier** (one value in the file, never seen in the baseline, and a
  baseline with no more distinct values than accepted files: a date or month column)
  is reported in the notes and not compared;
- **drift**: numbers by ``numeric_drift_measure`` (KS by default, or TFDV's
  Jensen-Shannon with the schema's threshold), strings with a domain by L-infinity;
  the label's distribution is judged apart (**label shift**, its own threshold);
- **unseen values** of strings without a domain, against the share the baseline
  predicts;
- **missing share**: the share of examples without the feature rose;
- **extreme drift**: a numeric KS statistic near 1 with the typical magnitude changed
  by an order of magnitude (units, scale), or a column that became empty.

KS, missing-share and label thresholds are raised to the sampling-noise floor of the two
sample sizes (``drift_significance``), so a small file's chance differences never read
as drift. Every finding names the feature, the measure, its value and the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cascade.core.validation_config import Check, ValidationConfig
from cascade.validation.drift import (
    jensen_shannon_divergence,
    ks_noise_floor,
    ks_statistic,
    l_infinity_distance,
    magnitude_ratio,
    proportion_noise_floor,
    unseen_share,
)
from cascade.validation.feature_columns import FeatureKind
from cascade.validation.findings import Finding, anomaly
from cascade.validation.summaries import FeatureSummary, NumericSummary
from cascade.validation.tfmd import anomalies_pb2, schema_pb2

__all__ = [
    "DistributionJudgement",
    "DriftMeasurement",
    "SampleSizes",
    "judge_distribution",
]

Type = anomalies_pb2.AnomalyInfo
KS = "ks"
JENSEN_SHANNON = "jensen_shannon_divergence"
L_INFINITY = "l_infinity"
MISSING_SHARE = "missing_share"
UNSEEN_SHARE = "unseen_share"
_MEASURE_NAMES = {
    KS: "Kolmogorov-Smirnov statistic",
    JENSEN_SHANNON: "approximate Jensen-Shannon divergence",
    L_INFINITY: "L-infinity distance",
    MISSING_SHARE: "missing share",
    UNSEEN_SHARE: "share of values unseen in the baseline",
}


@dataclass(frozen=True)
class DriftMeasurement:
    """One measure of one feature: ``measure`` is ``ks``, ``jensen_shannon_divergence``,
    ``l_infinity``, ``missing_share`` or ``unseen_share``; ``check`` the check it feeds.

    ``threshold`` is the one applied (raised to the noise floor where there is one);
    ``error_bound``: the true value may exceed ``value`` by this much (KS from
    histograms); ``detail``: where it happens and what the threshold is made of.
    """

    feature: str
    measure: str
    value: float
    threshold: float
    check: Check = Check.DRIFT
    error_bound: float = 0.0
    detail: str = ""

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold

    @property
    def measure_name(self) -> str:
        return _MEASURE_NAMES.get(self.measure, self.measure)

    def sentence(self) -> str:
        """E.g. ``The Kolmogorov-Smirnov statistic of 'amount' is 0.153 ..., above the
        threshold 0.1 (...)``."""
        relation = "above" if self.exceeded else "within"
        bound = f" (up to {self.value + self.error_bound:.3g})" if self.error_bound else ""
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"The {self.measure_name} of {self.feature!r} is {self.value:.3g}{bound}, "
            f"{relation} the threshold {self.threshold:.3g}{detail}."
        )


@dataclass(frozen=True)
class SampleSizes:
    """Examples in the file and in the baseline, and the baseline's accepted files."""

    examples: int
    baseline_examples: int
    files: int


@dataclass
class DistributionJudgement:
    measurements: list[DriftMeasurement] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batch_identifier: bool = False


def judge_distribution(
    expected: Any,
    found: FeatureSummary,
    previous: FeatureSummary,
    sizes: SampleSizes,
    config: ValidationConfig,
    *,
    is_label: bool = False,
) -> DistributionJudgement:
    """The distribution checks of one feature (``found``) against its baseline."""
    judgement = DistributionJudgement()
    name = expected.name
    emptied = _emptied(name, found, previous, sizes, config)
    if emptied is not None:
        judgement.measurements.append(emptied)
        judgement.findings.append(_extreme_finding(emptied, "the column became empty"))
        return judgement
    missing = _missing_share(name, found, previous, sizes, config)
    if missing is not None:
        judgement.measurements.append(missing)
        if missing.exceeded:
            judgement.findings.append(_missing_share_finding(missing))
    if not _comparable(expected, found, previous):
        return judgement
    identifier = _batch_identifier(found, previous, sizes.files, config)
    if identifier is not None:
        judgement.batch_identifier = True
        judgement.notes.append(
            f"feature {name!r}: a batch identifier (one value in this file, {identifier}, "
            "not in the baseline, whose every accepted file could hold one value of its "
            "own): reported, not drift-checked."
        )
        return judgement
    if found.numeric is not None and previous.numeric is not None:
        _judge_numbers(expected, found.numeric, previous, judgement, config, is_label=is_label)
    elif found.strings is not None and previous.strings is not None:
        _judge_strings(expected, found, previous, judgement, config, is_label=is_label)
    return judgement


def _comparable(expected: Any, found: FeatureSummary, previous: FeatureSummary) -> bool:
    """Both sides hold values of the schema's type (FLOAT accepts whole numbers)."""
    if found.numeric is not None and previous.numeric is not None:
        if expected.type == schema_pb2.FLOAT:
            return True
        return bool(expected.type == schema_pb2.INT and found.kind is FeatureKind.INT)
    if found.strings is not None and previous.strings is not None:
        return bool(expected.type == schema_pb2.BYTES)
    return False


def _present_share(feature: FeatureSummary, examples: int) -> float:
    return feature.presence.num_non_missing / examples if examples else 0.0


def _emptied(
    name: str,
    found: FeatureSummary,
    previous: FeatureSummary,
    sizes: SampleSizes,
    config: ValidationConfig,
) -> DriftMeasurement | None:
    """All examples miss the feature where the baseline makes that implausible."""
    if found.presence.num_non_missing or not sizes.examples:
        return None
    present = _present_share(previous, sizes.baseline_examples)
    if not present or (1 - present) ** sizes.examples >= config.drift_significance:
        return None
    baseline_missing = 1 - present
    return DriftMeasurement(
        name,
        MISSING_SHARE,
        1.0,
        baseline_missing,
        check=Check.EXTREME_DRIFT,
        detail=f"all {sizes.examples} examples; the baseline's missing share is "
        f"{baseline_missing:.3g}, under which an empty file has a chance below "
        f"{config.drift_significance:.3g}",
    )


def _missing_share(
    name: str,
    found: FeatureSummary,
    previous: FeatureSummary,
    sizes: SampleSizes,
    config: ValidationConfig,
) -> DriftMeasurement | None:
    if not sizes.examples or not sizes.baseline_examples:
        return None
    old = previous.presence.num_missing / sizes.baseline_examples
    new = found.presence.num_missing / sizes.examples
    floor = proportion_noise_floor(
        old, sizes.baseline_examples, new, sizes.examples, config.drift_significance
    )
    allowed = max(config.missing_share_threshold, floor)
    return DriftMeasurement(
        name,
        MISSING_SHARE,
        new,
        old + allowed,
        check=Check.MISSING_SHARE,
        detail=f"the baseline's {old:.3g} + {allowed:.3g}: missing_share_threshold "
        f"{config.missing_share_threshold:.3g}, sampling-noise floor {floor:.3g}",
    )


def _batch_identifier(
    found: FeatureSummary, previous: FeatureSummary, files: int, config: ValidationConfig
) -> str | None:
    """The file's one value, when the feature looks like a batch identifier."""
    if found.numeric is not None and previous.numeric is not None:
        current, old = found.numeric, previous.numeric
        if not current.count or not old.count or current.minimum != current.maximum:
            return None
        if len(old.histogram.counts) > files:
            return None
        value = current.minimum
        if _seen_number(value, old):
            return None
        return f"{value:.15g}"
    if found.strings is not None and previous.strings is not None:
        if found.strings.truncated or previous.strings.truncated:
            return None
        values = found.strings.value_counts(config.max_tracked_values)
        old_values = dict(previous.strings.value_counts(config.max_tracked_values))
        if len(values) != 1 or not old_values or len(old_values) > files:
            return None
        value_text = values[0][0]
        return None if value_text in old_values else repr(value_text)
    return None


def _seen_number(value: float, numeric: NumericSummary) -> bool:
    """The value may be among the baseline's: inside its range, in a non-empty bin."""
    if value < numeric.minimum or value > numeric.maximum:
        return False
    histogram = numeric.histogram
    key = int(value // histogram.width)
    return key in histogram.counts


def _judge_numbers(
    expected: Any,
    current: NumericSummary,
    previous: FeatureSummary,
    judgement: DistributionJudgement,
    config: ValidationConfig,
    *,
    is_label: bool,
) -> None:
    assert previous.numeric is not None
    old = previous.numeric
    name = expected.name
    if not old.histogram.total:
        if previous.presence.num_non_missing:
            judgement.notes.append(
                f"feature {name!r}: numeric drift not checked: the baseline's statistics have "
                "no cascade.aligned_histogram (not written by Cascade)."
            )
        return
    if not current.histogram.total:
        return
    ks = ks_statistic(old, current)
    if is_label:
        classes = _numeric_classes(old, current, config.max_domain_size)
        if classes is not None:
            _label_classes(name, *classes, judgement, config)
        else:
            _label_ks(name, ks.value, ks.error_bound, ks.at, old, current, judgement, config)
    else:
        _numeric_drift(expected, ks.value, ks.error_bound, ks.at, old, current, judgement, config)
    ratio = magnitude_ratio(old, current)
    if ks.value > config.extreme_drift_threshold and ratio >= config.extreme_scale_ratio:
        extreme = DriftMeasurement(
            name,
            KS,
            ks.value,
            config.extreme_drift_threshold,
            check=Check.EXTREME_DRIFT,
            error_bound=ks.error_bound,
            detail=f"extreme_drift_threshold; the typical magnitude changed {ratio:.3g}-fold, "
            f"at least extreme_scale_ratio {config.extreme_scale_ratio:.3g}",
        )
        judgement.measurements.append(extreme)
        judgement.findings.append(_extreme_finding(extreme, "units or scale changed?"))


def _numeric_drift(
    expected: Any,
    value: float,
    error_bound: float,
    at: float,
    old: NumericSummary,
    current: NumericSummary,
    judgement: DistributionJudgement,
    config: ValidationConfig,
) -> None:
    name = expected.name
    comparator_threshold = expected.drift_comparator.jensen_shannon_divergence.threshold
    if comparator_threshold <= 0:
        return
    if config.numeric_drift_measure == "jensen_shannon":
        divergence = jensen_shannon_divergence(old, current, config.drift_bins)
        measurement = DriftMeasurement(
            name,
            JENSEN_SHANNON,
            divergence,
            comparator_threshold,
            detail="the schema's drift_comparator",
        )
        judgement.measurements.append(measurement)
        if measurement.exceeded:
            judgement.findings.append(
                anomaly(
                    name,
                    Check.DRIFT,
                    Type.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH,
                    "High approximate Jensen-Shannon divergence between current and previous",
                    measurement.sentence(),
                )
            )
        return
    floor = ks_noise_floor(old.histogram.total, current.histogram.total, config.drift_significance)
    measurement = DriftMeasurement(
        name,
        KS,
        value,
        max(config.ks_threshold, floor),
        error_bound=error_bound,
        detail=_ks_detail(at, "ks_threshold", config.ks_threshold, floor, old, current),
    )
    judgement.measurements.append(measurement)
    if measurement.exceeded:
        judgement.findings.append(
            anomaly(
                name,
                Check.DRIFT,
                Type.CUSTOM_VALIDATION,
                "High Kolmogorov-Smirnov statistic between current and previous",
                measurement.sentence(),
            )
        )
    elif value + error_bound > measurement.threshold:
        judgement.notes.append(
            f"feature {name!r}: drift undecided: the Kolmogorov-Smirnov statistic is at least "
            f"{value:.3g} and at most {value + error_bound:.3g} at the histograms' resolution, "
            f"the threshold {measurement.threshold:.3g}."
        )


def _ks_detail(
    at: float,
    setting: str,
    configured: float,
    floor: float,
    old: NumericSummary,
    current: NumericSummary,
) -> str:
    where = f"largest at {at:.6g}; " if at == at else ""
    return (
        f"{where}{setting} {configured:.3g}, sampling-noise floor {floor:.3g} for "
        f"{current.histogram.total} values against the baseline's {old.histogram.total}"
    )


def _numeric_classes(
    old: NumericSummary, current: NumericSummary, max_classes: int
) -> tuple[dict[str, int], dict[str, int]] | None:
    """A numeric label's classes: integers with one value per bin, at most
    ``max_classes`` (``max_domain_size``) of them in the baseline."""
    if not (old.histogram.points and current.histogram.points):
        return None
    if len(old.histogram.counts) > max_classes:
        return None
    return (
        {str(key): count for key, count in old.histogram.counts.items()},
        {str(key): count for key, count in current.histogram.counts.items()},
    )


def _label_ks(
    name: str,
    value: float,
    error_bound: float,
    at: float,
    old: NumericSummary,
    current: NumericSummary,
    judgement: DistributionJudgement,
    config: ValidationConfig,
) -> None:
    floor = ks_noise_floor(old.histogram.total, current.histogram.total, config.drift_significance)
    measurement = DriftMeasurement(
        name,
        KS,
        value,
        max(config.label_shift_threshold, floor),
        check=Check.LABEL_SHIFT,
        error_bound=error_bound,
        detail=_ks_detail(
            at, "label_shift_threshold", config.label_shift_threshold, floor, old, current
        ),
    )
    judgement.measurements.append(measurement)
    if measurement.exceeded:
        judgement.findings.append(_label_finding(measurement, Type.CUSTOM_VALIDATION))


def _label_classes(
    name: str,
    old: dict[str, int],
    new: dict[str, int],
    judgement: DistributionJudgement,
    config: ValidationConfig,
) -> None:
    """Label shift by class: the class whose share moved most beyond its threshold."""
    total_old, total_new = sum(old.values()), sum(new.values())
    if not total_old or not total_new:
        return
    best: tuple[float, float, float, str, float] | None = None
    for value in sorted(old.keys() | new.keys()):
        share_old, share_new = old.get(value, 0) / total_old, new.get(value, 0) / total_new
        change = abs(share_new - share_old)
        floor = proportion_noise_floor(
            share_old, total_old, share_new, total_new, config.drift_significance
        )
        threshold = max(config.label_shift_threshold, floor)
        candidate = (change - threshold, change, threshold, value, floor)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    assert best is not None
    _, change, threshold, value, floor = best
    share_old, share_new = old.get(value, 0) / total_old, new.get(value, 0) / total_new
    measurement = DriftMeasurement(
        name,
        L_INFINITY,
        change,
        threshold,
        check=Check.LABEL_SHIFT,
        detail=f"class {value!r} from {share_old:.3g} to {share_new:.3g}; label_shift_threshold "
        f"{config.label_shift_threshold:.3g}, sampling-noise floor {floor:.3g}",
    )
    judgement.measurements.append(measurement)
    if measurement.exceeded:
        judgement.findings.append(_label_finding(measurement, Type.COMPARATOR_L_INFTY_HIGH))


def _judge_strings(
    expected: Any,
    found: FeatureSummary,
    previous: FeatureSummary,
    judgement: DistributionJudgement,
    config: ValidationConfig,
    *,
    is_label: bool,
) -> None:
    assert found.strings is not None
    assert previous.strings is not None
    name = expected.name
    old = dict(previous.strings.value_counts(config.max_tracked_values))
    new = dict(found.strings.value_counts(config.max_tracked_values))
    if is_label:
        _label_classes(name, old, new, judgement, config)
        return
    threshold = expected.drift_comparator.infinity_norm.threshold
    if threshold > 0:
        distance, value = l_infinity_distance(old, new)
        measurement = DriftMeasurement(
            name,
            L_INFINITY,
            distance,
            threshold,
            detail=f"value {value!r}; the schema's drift_comparator" if value else "",
        )
        judgement.measurements.append(measurement)
        if measurement.exceeded:
            judgement.findings.append(
                anomaly(
                    name,
                    Check.DRIFT,
                    Type.COMPARATOR_L_INFTY_HIGH,
                    "High Linfty distance between current and previous",
                    measurement.sentence(),
                )
            )
    if expected.WhichOneof("domain_info") is None:
        _unseen_values(name, found, previous, old, new, judgement, config)


def _unseen_values(
    name: str,
    found: FeatureSummary,
    previous: FeatureSummary,
    old: dict[str, int],
    new: dict[str, int],
    judgement: DistributionJudgement,
    config: ValidationConfig,
) -> None:
    assert found.strings is not None
    assert previous.strings is not None
    if previous.strings.truncated:
        judgement.notes.append(
            f"feature {name!r}: unseen values not checked: the baseline keeps only its "
            f"{config.max_tracked_values} most frequent values (max_tracked_values), so a "
            "value missing from them may have been seen."
        )
        return
    unseen = unseen_share(old, new, found.presence.tot_num_values)
    bound = "; at least: this file's value counts are truncated" if unseen.lower_bound else ""
    measurement = DriftMeasurement(
        name,
        UNSEEN_SHARE,
        unseen.share,
        unseen.expected + config.unseen_share_threshold,
        check=Check.UNSEEN_VALUES,
        detail=f"the {unseen.expected:.3g} the baseline predicts (its values seen once) + "
        f"unseen_share_threshold {config.unseen_share_threshold:.3g}{bound}",
    )
    judgement.measurements.append(measurement)
    if measurement.exceeded:
        judgement.findings.append(
            anomaly(
                name,
                Check.UNSEEN_VALUES,
                Type.ENUM_TYPE_UNEXPECTED_STRING_VALUES,
                "Many values unseen in the baseline",
                measurement.sentence(),
            )
        )


def _missing_share_finding(measurement: DriftMeasurement) -> Finding:
    return anomaly(
        measurement.feature,
        Check.MISSING_SHARE,
        Type.FEATURE_TYPE_LOW_FRACTION_PRESENT,
        "Missing share rose",
        measurement.sentence(),
    )


def _label_finding(measurement: DriftMeasurement, anomaly_type: int) -> Finding:
    return anomaly(
        measurement.feature,
        Check.LABEL_SHIFT,
        anomaly_type,
        "Label distribution shifted",
        measurement.sentence(),
    )


def _extreme_finding(measurement: DriftMeasurement, why: str) -> Finding:
    return anomaly(
        measurement.feature,
        Check.EXTREME_DRIFT,
        Type.CUSTOM_VALIDATION,
        "Extreme drift: a broken upstream?",
        f"{measurement.sentence()} Extreme drift: {why}",
    )
