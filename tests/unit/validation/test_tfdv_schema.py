"""A TFDV-made schema is honoured in full: top-level named string domains, boolean
domains and fixed shapes (TFMD schema.proto), with TFDV's anomaly types."""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format

from cascade.core.validation_config import Check, ValidationConfig
from cascade.validation.anomalies import ValidationResult, validate_statistics
from cascade.validation.tfmd import anomalies_pb2, schema_pb2
from tests.unit.validation.builders import summary_of

Type = anomalies_pb2.AnomalyInfo
CONFIG = ValidationConfig()


def _schema(text: str) -> Any:
    return text_format.Parse(text, schema_pb2.Schema())


def _judge(schema_text: str, columns: dict[str, list[object]]) -> ValidationResult:
    return validate_statistics(summary_of(columns, CONFIG), _schema(schema_text), None, CONFIG)


def _types(result: ValidationResult) -> list[tuple[str, Check, int]]:
    return [(f.feature, f.check, f.anomaly_type) for f in result.findings]


NAMED = """
string_domain { name: "colours" value: "red" value: "green" }
feature { name: "colour" type: BYTES domain: "colours" }
"""


def test_a_feature_naming_a_top_level_domain_is_checked_against_it() -> None:
    good = _judge(NAMED, {"colour": ["red", "green"] * 50})
    bad = _judge(NAMED, {"colour": ["red", "blue"] * 50})

    assert good.findings == []
    assert _types(bad) == [("colour", Check.DOMAIN, Type.ENUM_TYPE_UNEXPECTED_STRING_VALUES)]
    assert "'blue'" in bad.findings[0].description


def test_a_feature_naming_a_domain_the_schema_lacks_is_an_invalid_domain() -> None:
    result = _judge(
        'feature { name: "colour" type: BYTES domain: "shades" }', {"colour": ["red"] * 10}
    )

    assert _types(result) == [("colour", Check.DOMAIN, Type.INVALID_DOMAIN_SPECIFICATION)]
    assert "'shades'" in result.findings[0].description


def test_a_boolean_integer_feature_refuses_other_integers() -> None:
    schema = 'feature { name: "flag" type: INT bool_domain {} }'

    assert _judge(schema, {"flag": [0, 1] * 20}).findings == []
    assert _types(_judge(schema, {"flag": [0, 1, 2] * 20})) == [
        ("flag", Check.DOMAIN, Type.BOOL_TYPE_BIG_INT)
    ]
    assert _types(_judge(schema, {"flag": [0, 1, -1] * 20})) == [
        ("flag", Check.DOMAIN, Type.BOOL_TYPE_SMALL_INT)
    ]


def test_a_boolean_string_feature_accepts_only_its_true_and_false_values() -> None:
    schema = (
        'feature { name: "ok" type: BYTES bool_domain { true_value: "yes" false_value: "no" } }'
    )

    assert _judge(schema, {"ok": ["yes", "no"] * 20}).findings == []
    result = _judge(schema, {"ok": ["yes", "no", "maybe"] * 20})
    assert _types(result) == [("ok", Check.DOMAIN, Type.BOOL_TYPE_UNEXPECTED_STRING)]
    assert "'maybe'" in result.findings[0].description


def test_a_fixed_shape_of_one_value_needs_it_in_every_example() -> None:
    schema = 'feature { name: "x" type: FLOAT shape { dim { size: 1 } } }'

    assert _judge(schema, {"x": [1.0, 2.0] * 20}).findings == []
    missing = _judge(schema, {"x": [1.0, None] * 20})
    assert (("x", Check.VALUE_COUNT, Type.INVALID_FEATURE_SHAPE)) in _types(missing)
    assert "20 of 40 examples" in missing.findings[0].description


def test_a_shape_of_more_than_one_value_cannot_be_met_by_a_row() -> None:
    result = _judge('feature { name: "x" type: FLOAT shape { dim { size: 3 } } }', {"x": [1.0]})

    assert _types(result) == [("x", Check.VALUE_COUNT, Type.INVALID_FEATURE_SHAPE)]
    assert "needs 3 values" in result.findings[0].description
