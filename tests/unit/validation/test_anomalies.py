"""Each anomaly type on small crafted data, graded by the configured severity."""

from __future__ import annotations

import math
import random

from google.protobuf import text_format

from cascade.core.validation_config import Check, Severities, Severity, ValidationConfig
from cascade.validation.anomalies import Baseline, validate_statistics
from cascade.validation.schema import infer_schema, parse_schema_text, schema_to_text
from cascade.validation.tfmd import anomalies_pb2, schema_pb2
from tests.unit.validation.builders import summary_of

CONFIG = ValidationConfig()
Type = anomalies_pb2.AnomalyInfo


def _reference(rows: int = 400, seed: int = 0) -> dict[str, list[object]]:
    generator = random.Random(seed)
    return {
        "amount": [generator.gauss(100.0, 10.0) for _ in range(rows)],
        "age": [generator.randint(20, 60) for _ in range(rows)],
        "city": [generator.choice(["paris", "rome", "oslo"]) for _ in range(rows)],
    }


def _judge(
    columns: dict[str, list[object]],
    config: ValidationConfig = CONFIG,
    schema_columns: dict[str, list[object]] | None = None,
    with_baseline: bool = False,
):  # type: ignore[no-untyped-def]
    reference = summary_of(schema_columns or _reference())
    schema = infer_schema(reference, config)
    baseline = Baseline(reference, files=1) if with_baseline else None
    return validate_statistics(summary_of(columns, config), schema, baseline, config)


def _types(result, feature: str = "") -> set[int]:  # type: ignore[no-untyped-def]
    return {f.anomaly_type for f in result.findings if f.feature == feature}


def test_data_like_the_reference_has_no_anomalies() -> None:
    result = _judge(_reference(seed=1), with_baseline=True)

    assert result.findings == []
    assert result.accepted
    assert {m.feature for m in result.drift} == {"amount", "age", "city"}


def test_missing_feature_is_an_error() -> None:
    columns = _reference()
    del columns["age"]

    result = _judge(columns)

    assert _types(result, "age") == {Type.SCHEMA_MISSING_COLUMN}
    assert not result.accepted


def test_unexpected_feature_is_a_warning_by_default() -> None:
    columns = {**_reference(), "extra": [1] * 400}

    result = _judge(columns)

    assert _types(result, "extra") == {Type.SCHEMA_NEW_COLUMN}
    assert result.findings[0].severity is Severity.WARNING
    assert result.accepted


def test_type_change_from_int_to_string_is_an_error() -> None:
    columns = {**_reference(), "age": ["young"] * 400}

    result = _judge(columns)

    assert _types(result, "age") == {Type.INT_TYPE_NOT_INT_STRING}
    assert "Expected data of type: INT but got BYTES" in result.errors[0].description


def test_float_where_int_expected_is_an_unexpected_type() -> None:
    columns = {**_reference(), "age": [30.5] * 400}

    assert _types(_judge(columns), "age") == {Type.UNEXPECTED_DATA_TYPE}


def test_low_presence_fraction_is_an_error() -> None:
    columns = _reference()
    columns["city"] = [None if index % 2 else "paris" for index in range(400)]

    result = _judge(columns)

    assert Type.FEATURE_TYPE_LOW_FRACTION_PRESENT in _types(result, "city")


def test_feature_with_no_values_is_not_present() -> None:
    columns = {**_reference(), "amount": [None] * 400}

    assert _types(_judge(columns), "amount") == {Type.FEATURE_TYPE_NOT_PRESENT}


def test_more_values_per_example_than_expected() -> None:
    schema_columns = {"tags": [["a"], ["b"]] * 10}
    columns = {"tags": [["a", "b"]] * 10}

    result = _judge(columns, schema_columns=schema_columns)

    assert _types(result, "tags") == {Type.FEATURE_TYPE_HIGH_NUMBER_VALUES}


def test_fewer_values_per_example_than_expected() -> None:
    schema_columns = {"tags": [["a", "b"]] * 10}
    columns = {"tags": [["a"]] * 10}

    assert _types(_judge(columns, schema_columns=schema_columns), "tags") == {
        Type.FEATURE_TYPE_LOW_NUMBER_VALUES
    }


def test_new_categories_beyond_the_domain_mass_are_out_of_domain() -> None:
    columns = {**_reference(), "city": ["paris"] * 380 + ["berlin"] * 20}

    result = _judge(columns)

    assert Type.ENUM_TYPE_UNEXPECTED_STRING_VALUES in _types(result, "city")
    assert "'berlin' (~5%)" in next(f.description for f in result.findings)


def test_rare_new_category_within_the_domain_mass_passes() -> None:
    columns = {**_reference(), "city": ["paris"] * 399 + ["berlin"]}

    assert _types(_judge(columns), "city") == set()


def test_out_of_range_numbers_against_a_user_domain() -> None:
    schema = infer_schema(summary_of(_reference()), CONFIG)
    age = next(feature for feature in schema.feature if feature.name == "age")
    age.int_domain.min, age.int_domain.max = 18, 99
    columns = {**_reference(), "age": [10] * 200 + [120] * 200}

    result = validate_statistics(summary_of(columns), schema, None, CONFIG)

    assert _types(result, "age") == {Type.INT_TYPE_SMALL_INT, Type.INT_TYPE_BIG_INT}


def test_nan_and_inf_in_a_float_feature_that_had_none() -> None:
    columns = {**_reference(), "amount": [1.0, math.nan, math.inf] * 100 + [2.0] * 100}

    assert _types(_judge(columns), "amount") == {Type.FLOAT_TYPE_HAS_NAN, Type.FLOAT_TYPE_HAS_INF}


def test_shifted_numeric_mean_is_kolmogorov_smirnov_drift_by_default() -> None:
    columns = _reference(seed=2)
    columns["amount"] = [value + 15.0 for value in columns["amount"]]  # type: ignore[operator]

    result = _judge(columns, with_baseline=True)

    assert _types(result, "amount") == {Type.CUSTOM_VALIDATION}
    drift = next(m for m in result.drift if m.feature == "amount" and m.check is Check.DRIFT)
    assert (drift.measure, drift.exceeded) == ("ks", True)


def test_shifted_numeric_mean_is_jensen_shannon_drift_when_configured() -> None:
    config = ValidationConfig(numeric_drift_measure="jensen_shannon")
    columns = _reference(seed=2)
    columns["amount"] = [value + 15.0 for value in columns["amount"]]  # type: ignore[operator]

    result = _judge(columns, config, with_baseline=True)

    assert _types(result, "amount") == {Type.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH}
    drift = next(m for m in result.drift if m.feature == "amount" and m.check is Check.DRIFT)
    assert (drift.measure, drift.exceeded) == ("jensen_shannon_divergence", True)


def test_changed_category_shares_are_l_infinity_drift() -> None:
    columns = {**_reference(seed=3), "city": ["paris"] * 300 + ["rome"] * 50 + ["oslo"] * 50}

    assert _types(_judge(columns, with_baseline=True), "city") == {Type.COMPARATOR_L_INFTY_HIGH}


def test_small_files_skip_drift_checks() -> None:
    small = {name: values[:20] for name, values in _reference(seed=4).items()}
    small["city"] = ["oslo"] * 20

    result = _judge(small, with_baseline=True)

    assert result.drift == []


def test_sudden_drop_in_example_count_is_a_dataset_warning() -> None:
    small = {name: values[:20] for name, values in _reference(seed=4).items()}

    result = _judge(small, with_baseline=True)

    assert _types(result, "") == {Type.COMPARATOR_LOW_NUM_EXAMPLES}
    assert result.accepted


def test_severity_comes_from_the_config() -> None:
    config = ValidationConfig(
        severities=Severities(missing_feature=Severity.WARNING, unexpected_feature=Severity.IGNORE)
    )
    columns = {**_reference(), "extra": [1] * 400}
    del columns["age"]

    result = _judge(columns, config)

    assert [(f.feature, f.severity) for f in result.findings] == [("age", Severity.WARNING)]
    assert result.accepted


def test_deprecated_features_are_not_checked() -> None:
    schema = infer_schema(summary_of(_reference()), CONFIG)
    next(f for f in schema.feature if f.name == "age").lifecycle_stage = schema_pb2.DEPRECATED
    columns = _reference()
    del columns["age"]

    assert validate_statistics(summary_of(columns), schema, None, CONFIG).findings == []


def test_anomalies_parse_as_tfmd_text_with_tfdv_types() -> None:
    columns = {**_reference(), "extra": [1] * 400}
    del columns["age"]
    result = _judge(columns)

    parsed = text_format.Parse(
        text_format.MessageToString(result.anomalies), anomalies_pb2.Anomalies()
    )

    assert parsed.anomaly_info["age"].severity == Type.ERROR
    assert parsed.anomaly_info["age"].reason[0].type == Type.SCHEMA_MISSING_COLUMN
    assert parsed.anomaly_info["extra"].severity == Type.WARNING
    assert parsed.anomaly_info["extra"].short_description == "New column"
    assert [f.name for f in parsed.baseline.feature] == ["amount", "age", "city"]


def test_inferred_schema_round_trips_through_text_and_has_the_expected_constraints() -> None:
    schema = infer_schema(summary_of(_reference()), CONFIG)

    parsed = parse_schema_text(schema_to_text(schema, header="inferred\nby a test"), where="t")

    assert parsed == schema
    city = next(f for f in parsed.feature if f.name == "city")
    amount = next(f for f in parsed.feature if f.name == "amount")
    assert sorted(city.string_domain.value) == ["oslo", "paris", "rome"]
    assert city.drift_comparator.infinity_norm.threshold == CONFIG.l_infinity_threshold
    assert amount.type == schema_pb2.FLOAT
    assert amount.float_domain.disallow_nan
    assert amount.drift_comparator.jensen_shannon_divergence.threshold == (
        CONFIG.jensen_shannon_threshold
    )
    assert amount.presence.min_fraction == 0.95
    assert (amount.value_count.min, amount.value_count.max) == (1, 1)


def test_a_string_constant_in_the_first_file_gets_no_domain() -> None:
    """A batch identifier ("2023-01" in every row) must not fail the next period."""
    schema = infer_schema(summary_of({"period": ["2023-01"] * 400}), CONFIG)

    assert not schema.feature[0].HasField("string_domain")


def test_high_cardinality_strings_get_no_domain() -> None:
    schema = infer_schema(summary_of({"id": [f"user-{i}" for i in range(400)]}), CONFIG)

    assert not schema.feature[0].HasField("string_domain")
