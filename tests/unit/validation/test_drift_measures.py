"""Drift measures that are right on real data (issue 14): the histogram artefacts are
gone, KS catches moderate shifts and ignores a single row's extreme, and the value
skews (missing share, label shift, unseen values, extreme drift) and batch identifiers
are found on small synthetic data with the issue's own examples."""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import replace
from statistics import NormalDist
from typing import Any

import pytest

from cascade.core.validation_config import Check, Severity, ValidationConfig
from cascade.validation.anomalies import (
    Baseline,
    DriftMeasurement,
    ValidationResult,
    validate_statistics,
)
from cascade.validation.drift import jensen_shannon_divergence, ks_statistic
from cascade.validation.histogram import AlignedHistogram
from cascade.validation.schema import infer_schema
from cascade.validation.statistics import statistics_proto
from cascade.validation.summaries import DatasetSummary, NumericSummary
from tests.unit.validation.builders import summary_of

CONFIG = ValidationConfig()
JSD_CONFIG = ValidationConfig(numeric_drift_measure="jensen_shannon")
Columns = dict[str, list[object]]


def _numbers(values: list[Any]) -> NumericSummary:
    numeric = summary_of({"x": values}).features["x"].numeric
    assert numeric is not None
    return numeric


def _exact_ks(first: list[float], second: list[float]) -> float:
    """The two-sample KS statistic of raw values, by brute force."""
    a, b = sorted(first), sorted(second)
    return max(
        abs(bisect.bisect_right(a, point) / len(a) - bisect.bisect_right(b, point) / len(b))
        for point in set(a) | set(b)
    )


def _judge(
    baseline_columns: Columns | list[Columns],
    current_columns: Columns,
    config: ValidationConfig = CONFIG,
    *,
    label: str | None = None,
    without_domain: str = "",
) -> ValidationResult:
    """Judge a file against a baseline of one file, or of several (merged), with the
    schema inferred from the first (``without_domain``: as a user would edit it)."""
    files = baseline_columns if isinstance(baseline_columns, list) else [baseline_columns]
    summaries = [summary_of(columns, config) for columns in files]
    merged = summaries[0]
    for summary in summaries[1:]:
        merged = merged.merged(summary, config.max_tracked_values)
    schema = infer_schema(summaries[0], config)
    for feature in schema.feature:
        if feature.name == without_domain:
            feature.ClearField("string_domain")
    return validate_statistics(
        summary_of(current_columns, config),
        schema,
        Baseline(merged, files=len(files)),
        config,
        label=label,
    )


def _checks(result: ValidationResult, feature: str) -> set[Check]:
    return {finding.check for finding in result.findings if finding.feature == feature}


def _measurement(result: ValidationResult, feature: str, check: Check) -> DriftMeasurement:
    return next(m for m in result.drift if m.feature == feature and m.check is check)


def _normal_sample(rows: int, mean: float, std: float) -> list[float]:
    """Evenly spaced normal quantiles: a sample whose KS distances are known in advance."""
    normal = NormalDist(mean, std)
    return [round(normal.inv_cdf((index + 0.5) / rows), 3) for index in range(rows)]


def _payments(rows: int, seed: int, maximum: float) -> list[float]:
    """85% zeros, the rest skewed amounts in cents, one row at ``maximum``."""
    generator = random.Random(seed)
    values = [
        0.0 if generator.random() < 0.85 else round(generator.expovariate(1 / 300), 2)
        for _ in range(rows)
    ]
    values[0] = maximum
    return values


# --- the two histogram artefacts ---------------------------------------------------


def test_a_single_one_among_zeros_is_a_tiny_distance_either_way() -> None:
    one_among_zeros, zeros = _numbers([0] * 999 + [1]), _numbers([0] * 1000)

    for old, new in ((zeros, one_among_zeros), (one_among_zeros, zeros)):
        assert jensen_shannon_divergence(old, new, CONFIG.drift_bins) < 0.001  # was 0.855
        assert ks_statistic(old, new).value == pytest.approx(0.001)
        assert ks_statistic(old, new).error_bound == 0.0


def test_mostly_zeros_with_the_maximum_moving_from_31k_to_199k_is_no_drift() -> None:
    baseline = _payments(5000, seed=1, maximum=31_000.0)
    current = _payments(5000, seed=2, maximum=199_000.0)

    assert jensen_shannon_divergence(_numbers(baseline), _numbers(current), 20) < 0.01  # was 0.52
    for config in (CONFIG, JSD_CONFIG):
        result = _judge({"paid": baseline}, {"paid": current}, config)
        assert result.findings == []


def test_a_constant_baseline_sees_a_move_up_and_a_move_down_alike() -> None:
    for one, seven in (([1] * 500, [7] * 500), ([1.0] * 500, [7.0] * 500)):
        low, high = _numbers(one), _numbers(seven)

        assert jensen_shannon_divergence(low, high, 20) == 1.0  # was 0.0
        assert jensen_shannon_divergence(high, low, 20) == 1.0
        assert ks_statistic(low, high).value == ks_statistic(high, low).value == 1.0


def test_a_falling_share_of_zeros_is_seen_inside_the_first_bin() -> None:
    generator = random.Random(8)

    def amounts(zero_share: float) -> list[float]:
        values = [
            0.0 if generator.random() < zero_share else round(generator.uniform(1, 200), 2)
            for _ in range(4000)
        ]
        return [*values, 31_000.0]  # one large value: bins 32 wide, zeros share bin [0, 32)

    baseline, current = amounts(0.85), amounts(0.70)

    measured = ks_statistic(_numbers(baseline), _numbers(current))

    assert measured.value == pytest.approx(_exact_ks(baseline, current), abs=0.01)
    assert measured.at == 0.0
    assert _checks(_judge({"paid": baseline}, {"paid": current}), "paid") == {Check.DRIFT}


def test_values_beyond_the_baselines_range_are_a_bucket_of_their_own() -> None:
    spread, below = _numbers(list(range(100, 200)) * 10), _numbers(list(range(10)) * 100)

    assert jensen_shannon_divergence(spread, below, 20) == 1.0
    assert ks_statistic(spread, below).value == 1.0


def test_point_masses_stay_points_in_the_written_quantiles_and_histograms() -> None:
    summary = summary_of(
        {
            "n": [0] * 999 + [1],
            "m": [5] * 999 + [6],
            "paid": _payments(1000, seed=3, maximum=5e4),
        }
    )

    statistics = statistics_proto(summary, CONFIG, name="file")

    n, m, paid = (
        next(f for f in statistics.datasets[0].features if f.path.step[0] == name)
        for name in ("n", "m", "paid")
    )
    for feature, value in ((n, 0.0), (m, 5.0)):
        assert feature.num_stats.median == value
        standard = [bucket.sample_count for bucket in feature.num_stats.histograms[0].buckets]
        assert (standard[0], standard[-1], sum(standard[1:-1])) == (999, 1, 0)
    assert paid.num_stats.median == 0.0
    quantiles = paid.num_stats.histograms[1].buckets
    assert [bucket.high_value for bucket in quantiles[:8]] == [0.0] * 8


def test_ks_from_histograms_lies_within_its_error_bound_of_the_exact_statistic() -> None:
    generator = random.Random(7)
    pairs = [
        (
            [generator.gauss(0, 1) for _ in range(3000)],
            [generator.gauss(0.2, 1.1) for _ in range(2000)],
        ),
        (
            [generator.randint(0, 50) for _ in range(3000)],
            [generator.randint(5, 60) for _ in range(500)],
        ),
        (_payments(3000, 4, 31_000.0), _payments(3000, 5, 199_000.0)),
        (
            [generator.lognormvariate(3, 1) for _ in range(3000)],
            [generator.lognormvariate(3.2, 1) for _ in range(3000)] + [1e9],
        ),
    ]
    for first, second in pairs:
        measured = ks_statistic(_numbers(first), _numbers(second))
        exact = _exact_ks(first, second)

        assert measured.value <= exact + 1e-9
        assert exact <= measured.value + measured.error_bound + 1e-9


# --- the measure: moderate shifts caught, the extreme tail ignored -----------------


def test_a_moderate_shift_of_a_delay_is_ks_drift_that_jensen_shannon_misses() -> None:
    generator = random.Random(11)
    before = [round(generator.lognormvariate(3.0, 0.7), 1) for _ in range(4000)]
    after = [
        round(value * 4 / 3, 1)
        for value in (generator.lognormvariate(3.0, 0.7) for _ in range(4000))
    ]
    assert 0.12 <= _exact_ks(before, after) <= 0.21  # the moderate real shifts

    by_ks = _judge({"delay": before}, {"delay": after})
    by_jsd = _judge({"delay": before}, {"delay": after}, JSD_CONFIG)

    assert _checks(by_ks, "delay") == {Check.DRIFT}
    assert by_ks.value_skews == by_ks.findings  # drift retrains by default
    measured = _measurement(by_ks, "delay", Check.DRIFT)
    assert measured.measure == "ks"
    assert measured.value == pytest.approx(
        _exact_ks(before, after), abs=measured.error_bound + 1e-9
    )
    assert _checks(by_jsd, "delay") == set()


def test_a_single_rows_maximum_is_not_drift() -> None:
    values = _normal_sample(2000, 100.0, 10.0)
    with_outlier = [*values[:-1], 1e7]

    result = _judge({"amount": values}, {"amount": with_outlier})

    assert result.findings == []
    assert _measurement(result, "amount", Check.DRIFT).value == pytest.approx(1 / 2000)


def test_ks_drift_in_a_small_file_must_also_clear_the_sampling_noise_floor() -> None:
    baseline = {"amount": _normal_sample(5000, 100.0, 10.0)}
    shifted_small = {"amount": _normal_sample(200, 103.0, 10.0)}  # KS ~0.12
    shifted_large = {"amount": _normal_sample(5000, 103.0, 10.0)}

    small, large = _judge(baseline, shifted_small), _judge(baseline, shifted_large)

    small_ks = _measurement(small, "amount", Check.DRIFT)
    assert small_ks.value > CONFIG.ks_threshold
    assert small_ks.threshold == pytest.approx(1.949 * math.sqrt(5200 / (5000 * 200)), abs=1e-3)
    assert _checks(small, "amount") == set()
    assert _checks(large, "amount") == {Check.DRIFT}


def test_two_random_halves_of_the_same_data_have_no_findings() -> None:
    generator = random.Random(5)
    rows = 6000
    table: Columns = {
        "amount": [round(generator.gauss(100, 30), 2) for _ in range(rows)],
        "paid": _payments(rows, seed=6, maximum=31_000.0),
        "age": [
            generator.randint(18, 90) if generator.random() > 0.02 else None for _ in range(rows)
        ],
        "city": [generator.choice(["paris", "rome", "oslo", "lima"]) for _ in range(rows)],
        "product": [f"p{int(generator.paretovariate(0.7))}" for _ in range(rows)],
        "order_id": [f"o{index}" for index in range(rows)],
        "churned": [int(generator.random() < 0.3) for _ in range(rows)],
    }
    order = list(range(rows))
    generator.shuffle(order)
    halves = [
        {name: [values[i] for i in order[part::2]] for name, values in table.items()}
        for part in (0, 1)
    ]

    result = _judge(halves[0], halves[1], label="churned")

    assert result.findings == []
    assert result.batch_identifiers == []
    assert {m.feature for m in result.drift if m.check is Check.UNSEEN_VALUES} == {
        "product",
        "order_id",
    }
    assert _measurement(result, "churned", Check.LABEL_SHIFT).measure == "l_infinity"


# --- value skews ----------------------------------------------------------------------


def _with_missing(rows: int, missing: int, seed: int) -> list[object]:
    generator = random.Random(seed)
    values: list[object] = [round(generator.gauss(50, 5), 2) for _ in range(rows)]
    for index in generator.sample(range(rows), missing):
        values[index] = None
    return values


def test_missing_share_rising_from_1_9_to_5_percent_is_a_value_skew() -> None:
    baseline = {"income": _with_missing(2000, 38, seed=1)}  # 1.9%

    rose = _judge(baseline, {"income": _with_missing(2000, 100, seed=2)})  # 5%
    steady = _judge(baseline, {"income": _with_missing(2000, 50, seed=3)})  # 2.5%

    assert _checks(rose, "income") == {Check.MISSING_SHARE}
    assert [f.severity for f in rose.findings] == [Severity.RETRAIN]
    assert rose.accepted
    measured = _measurement(rose, "income", Check.MISSING_SHARE)
    assert (measured.value, measured.threshold) == (pytest.approx(0.05), pytest.approx(0.039))
    assert steady.findings == []


def test_a_nine_point_shift_of_the_label_is_a_label_shift() -> None:
    def labels(positives: int, kind: str) -> list[object]:
        values = [1] * positives + [0] * (2000 - positives)
        return [("yes" if value else "no") for value in values] if kind == "str" else list(values)

    for kind in ("int", "str"):
        baseline, current = {"y": labels(600, kind)}, {"y": labels(780, kind)}  # 30% -> 39%

        as_label = _judge(baseline, current, label="y")
        as_feature = _judge(baseline, current)

        assert _checks(as_label, "y") == {Check.LABEL_SHIFT}
        measured = _measurement(as_label, "y", Check.LABEL_SHIFT)
        assert measured.value == pytest.approx(0.09)
        assert measured.threshold == pytest.approx(CONFIG.label_shift_threshold)
        assert Check.DRIFT not in {m.check for m in as_label.drift if m.feature == "y"}
        assert as_feature.findings == []  # below the feature drift limits: why labels are apart


def test_a_numeric_label_shift_is_measured_by_ks() -> None:
    baseline = {"price": _normal_sample(3000, 200.0, 40.0)}
    current = {"price": _normal_sample(3000, 206.0, 40.0)}  # KS ~0.06

    result = _judge(baseline, current, label="price")

    assert _checks(result, "price") == {Check.LABEL_SHIFT}
    assert _measurement(result, "price", Check.LABEL_SHIFT).measure == "ks"


def test_half_the_values_of_a_high_cardinality_string_unseen_is_a_value_skew() -> None:
    generator = random.Random(9)
    known = [f"sku-{index}" for index in range(400)]
    baseline = {"sku": [generator.choice(known) for _ in range(8000)]}
    current = {
        "sku": [
            generator.choice(known) if index % 2 else f"new-{index % 300}" for index in range(2000)
        ]
    }

    result = _judge(baseline, current)

    assert _checks(result, "sku") == {Check.UNSEEN_VALUES}
    measured = _measurement(result, "sku", Check.UNSEEN_VALUES)
    assert measured.value == pytest.approx(0.5)
    assert measured.threshold == pytest.approx(0.2)  # the baseline predicts ~no unseen value


def test_unseen_values_are_not_guessed_when_the_baseline_counts_are_truncated() -> None:
    config = ValidationConfig(max_tracked_values=50)
    generator = random.Random(10)
    baseline = {"sku": [f"sku-{generator.randint(0, 199)}" for _ in range(4000)]}
    current = {"sku": [f"new-{generator.randint(0, 39)}" for _ in range(1000)]}

    result = _judge(baseline, current, config)

    assert Check.UNSEEN_VALUES not in _checks(result, "sku")
    assert any(
        "'sku': unseen values not checked" in note and "max_tracked_values" in note
        for note in result.notes
    )


def test_a_column_constant_in_each_file_is_a_batch_identifier_not_drift() -> None:
    def month_file(month: int, text: str) -> Columns:
        return {
            "month": [month] * 300,
            "period": [text] * 300,
            "amount": _normal_sample(300, 100.0, 10.0),
        }

    files = [month_file(202301, "2023-01"), month_file(202302, "2023-02")]
    result = _judge(files, month_file(202303, "2023-03"))

    assert result.findings == []
    assert result.batch_identifiers == ["month", "period"]
    assert any("'month': a batch identifier" in note and "202303" in note for note in result.notes)
    assert {m.feature for m in result.drift if m.check is Check.DRIFT} == {"amount"}


def test_a_varied_feature_stuck_at_a_new_constant_is_drift_not_a_batch_identifier() -> None:
    result = _judge({"amount": _normal_sample(2000, 100.0, 10.0)}, {"amount": [150.0] * 2000})

    assert result.batch_identifiers == []
    assert _checks(result, "amount") == {Check.DRIFT}


def test_a_units_change_is_extreme_drift_that_quarantines() -> None:
    grams = _normal_sample(2000, 500.0, 100.0)
    milligrams = [value * 1000 for value in _normal_sample(2000, 500.0, 100.0)]

    result = _judge({"weight": grams}, {"weight": milligrams})

    assert _checks(result, "weight") == {Check.DRIFT, Check.EXTREME_DRIFT}
    assert not result.accepted
    extreme = next(f for f in result.findings if f.check is Check.EXTREME_DRIFT)
    assert extreme.severity is Severity.ERROR
    assert "1e+03-fold" in extreme.description


def test_a_column_that_became_all_missing_is_extreme_drift() -> None:
    baseline = {"income": _with_missing(2000, 38, seed=1), "n": list(range(2000))}
    current: Columns = {"income": [None] * 2000, "n": list(range(2000))}

    result = _judge(baseline, current)

    assert Check.EXTREME_DRIFT in _checks(result, "income")
    assert Check.MISSING_SHARE not in _checks(result, "income")
    assert not result.accepted


def test_a_baseline_without_aligned_histograms_says_numeric_drift_is_not_checked() -> None:
    baseline = summary_of({"amount": _normal_sample(1000, 100.0, 10.0)})
    numeric = baseline.features["amount"].numeric
    assert numeric is not None
    stripped = replace(numeric, histogram=AlignedHistogram())  # statistics TFDV wrote
    tfdv_like = DatasetSummary(
        baseline.num_examples,
        {"amount": replace(baseline.features["amount"], numeric=stripped)},
    )
    current = summary_of({"amount": _normal_sample(1000, 150.0, 10.0)})

    result = validate_statistics(
        current, infer_schema(baseline, CONFIG), Baseline(tfdv_like, 1), CONFIG
    )

    assert result.findings == []
    assert any("'amount': numeric drift not checked" in note for note in result.notes)


def test_every_finding_names_the_feature_the_measure_its_value_and_the_threshold() -> None:
    generator = random.Random(12)
    baseline: Columns = {
        "delay": [round(generator.lognormvariate(3.0, 0.7), 1) for _ in range(3000)],
        "income": _with_missing(3000, 57, seed=4),
        "sku": [f"sku-{generator.randint(0, 299)}" for _ in range(3000)],
        "y": [int(generator.random() < 0.3) for _ in range(3000)],
    }
    current: Columns = {
        "delay": [round(generator.lognormvariate(3.3, 0.7), 1) for _ in range(3000)],
        "income": _with_missing(3000, 150, seed=5),
        "sku": [f"new-{generator.randint(0, 299)}" for _ in range(3000)],
        "y": [int(generator.random() < 0.39) for _ in range(3000)],
    }

    result = _judge(baseline, current, label="y")

    assert {(f.feature, f.check) for f in result.findings} == {
        ("delay", Check.DRIFT),
        ("income", Check.MISSING_SHARE),
        ("sku", Check.UNSEEN_VALUES),
        ("y", Check.LABEL_SHIFT),
    }
    for finding in result.findings:
        measured = _measurement(result, finding.feature, finding.check)
        assert f"{finding.feature!r}" in finding.description
        assert measured.measure_name in finding.description
        assert f"{measured.value:.3g}" in finding.description
        assert f"the threshold {measured.threshold:.3g}" in finding.description
