"""The HTML report escapes what the data controls; the pipeline config names bad fields."""

from __future__ import annotations

import pytest

from cascade.core.errors import InvalidConfigError
from cascade.core.pipeline_config import PipelineConfig, parse_pipeline_config
from cascade.core.validation_config import Severity, ValidationConfig
from cascade.report.validation_page import render_report
from cascade.validation.anomalies import Baseline, validate_statistics
from cascade.validation.schema import infer_schema
from tests.unit.validation.builders import summary_of

HOSTILE = "<script>alert('x')</script>"


def test_report_escapes_feature_names_and_values_and_highlights_anomalies() -> None:
    config = ValidationConfig()
    reference = summary_of({"city": ["a", "b"] * 200, "n": list(range(400))})
    current = summary_of({"city": [HOSTILE] * 400, HOSTILE: [1] * 400, "n": list(range(400))})
    result = validate_statistics(
        current, infer_schema(reference, config), Baseline(reference, 1), config
    )

    html = render_report(
        source=f"gs://landing/ds/{HOSTILE}.csv",
        run_id="run-1",
        current=current,
        baseline=reference,
        result=result,
        config=config,
    )

    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert 'class="error"' in html
    assert "REJECTED" in html
    assert "Unexpected string values" in html


def test_absent_config_means_defaults() -> None:
    assert parse_pipeline_config("", where="p") == PipelineConfig()


def test_config_sections_are_parsed() -> None:
    config = parse_pipeline_config(
        "label: churned\nproblem_type: binary\nvalidation:\n  jensen_shannon_threshold: 0.05\n"
        "  severities:\n    drift: warning\n",
        where="gs://a/datasets/ds/pipeline.yaml",
    )

    assert config.label == "churned"
    assert config.problem_type == "binary"
    assert config.validation.jensen_shannon_threshold == 0.05
    assert config.validation.severities.drift is Severity.WARNING


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("labl: x\n", "labl"),
        ("problem_type: clustering\n", "problem_type"),
        ("validation:\n  severities:\n    drift: maybe\n", "validation.severities.drift"),
        ("validation:\n  max_file_size_bytes: -1\n", "validation.max_file_size_bytes"),
        ("- a\n- b\n", "mapping"),
        ("label: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_config_names_the_field(text: str, named: str) -> None:
    with pytest.raises(InvalidConfigError) as raised:
        parse_pipeline_config(text, where="gs://a/datasets/ds/pipeline.yaml")

    assert named in str(raised.value)
    assert "gs://a/datasets/ds/pipeline.yaml" in str(raised.value)
