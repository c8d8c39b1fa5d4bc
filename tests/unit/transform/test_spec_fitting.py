"""Fitting the transform from merged statistics."""

from __future__ import annotations

import math
import statistics as pystats

import pytest

from cascade.core.errors import InvalidConfigError
from cascade.core.training_config import TransformConfig
from cascade.core.validation_config import ValidationConfig
from cascade.transform.spec import HashTransform, NumericTransform, VocabularyTransform
from cascade.transform.spec_fitting import fit_transform
from cascade.validation.statistics import statistics_proto, summary_of_statistics
from cascade.validation.summaries import DatasetSummary
from tests.unit.validation.builders import summary_of


def _through_proto(summary: DatasetSummary) -> DatasetSummary:
    """What the transform step reads back from baseline_stats.pb."""
    config = ValidationConfig()
    return summary_of_statistics(statistics_proto(summary, config, name="baseline"))


def _summary() -> DatasetSummary:
    return _through_proto(
        summary_of(
            {
                "income": [10.0, 20.0, None, 40.0, 30.0, 20.0],
                "region": ["north", "south", "north", "east", None, "north"],
                "customer_id": ["c1", "c2", "c3", "c4", "c5", "c6"],
                "defaulted": [0, 1, 0, 0, 1, 0],
            },
            batch_rows=4,
        )
    )


def test_numeric_feature_is_standardised_filled_and_clipped_from_the_statistics() -> None:
    fitted = fit_transform(
        _summary(),
        dataset="credit",
        label="defaulted",
        problem_type="binary",
        schema=None,
        config=TransformConfig(exclude=["customer_id"], bucketize={"income": [15.0, 25.0]}),
    )

    income = next(f for f in fitted.features if f.name == "income")
    values = [10.0, 20.0, 40.0, 30.0, 20.0]
    assert isinstance(income, NumericTransform)
    assert math.isclose(income.mean, pystats.fmean(values))
    assert math.isclose(income.std, pystats.pstdev(values))
    assert income.fill_value == income.mean
    assert income.clip == (10.0, 40.0)
    assert income.bucket_boundaries == [15.0, 25.0]


def test_strings_get_a_frequency_ordered_vocabulary_or_a_hash_past_the_limit() -> None:
    small = fit_transform(
        _summary(),
        dataset="credit",
        label="defaulted",
        problem_type="binary",
        schema=None,
        config=TransformConfig(num_oov_buckets=2),
    )
    large = fit_transform(
        _summary(),
        dataset="credit",
        label="defaulted",
        problem_type="binary",
        schema=None,
        config=TransformConfig(vocabulary_max_size=2, hash_buckets=64),
    )

    region = next(f for f in small.features if f.name == "region")
    assert isinstance(region, VocabularyTransform)
    assert region.vocabulary == ["north", "east", "south"]
    assert region.num_oov_buckets == 2
    hashed = next(f for f in large.features if f.name == "region")
    assert isinstance(hashed, HashTransform)
    assert hashed.hash_buckets == 64


def test_label_classes_key_and_exclusions() -> None:
    fitted = fit_transform(
        _summary(),
        dataset="credit",
        label="defaulted",
        problem_type="binary",
        schema=None,
        config=TransformConfig(key_column="customer_id", eval_fraction=0.3),
    )

    assert fitted.label.classes == ["0", "1"]
    assert [f.name for f in fitted.features] == ["income", "region"]
    assert fitted.passthrough_key == "customer_id"
    assert fitted.split.method == "key"
    assert fitted.split.key_column == "customer_id"
    assert fitted.split.eval_fraction == 0.3


def test_fitting_is_deterministic() -> None:
    first = fit_transform(
        _summary(),
        dataset="credit",
        label="defaulted",
        problem_type="binary",
        schema=None,
        config=TransformConfig(),
    )
    second = fit_transform(
        _summary(),
        dataset="credit",
        label="defaulted",
        problem_type="binary",
        schema=None,
        config=TransformConfig(),
    )

    assert first == second


@pytest.mark.parametrize(
    ("label", "problem_type", "config", "message"),
    [
        (None, "binary", TransformConfig(), "needs `label` and `problem_type`"),
        ("defaulted", None, TransformConfig(), "needs `label` and `problem_type`"),
        ("churned", "binary", TransformConfig(), "label names 'churned'"),
        ("region", "binary", TransformConfig(), "needs exactly 2"),
        ("region", "regression", TransformConfig(), "holds text"),
        ("defaulted", "binary", TransformConfig(bucketize={"region": [1.0]}), "not a numeric"),
        (
            "defaulted",
            "binary",
            TransformConfig(bucketize={"income": [2.0, 1.0]}),
            "increase strictly",
        ),
    ],
)
def test_config_problems_are_invalid_config_errors_that_say_what(
    label: str | None, problem_type: str | None, config: TransformConfig, message: str
) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        fit_transform(
            _summary(),
            dataset="credit",
            label=label,
            problem_type=problem_type,
            config=config,
            schema=None,
        )


def test_multiclass_string_label_classes_are_sorted() -> None:
    fitted = fit_transform(
        _summary(),
        dataset="credit",
        label="region",
        problem_type="multiclass",
        schema=None,
        config=TransformConfig(),
    )

    assert fitted.label.classes == ["east", "north", "south"]
    assert "region" not in [f.name for f in fitted.features]
