"""Tuning specs Vertex AI's StudySpec refuses are refused in the config, naming the field.

The rules are Vertex AI's (``StudySpec.ParameterSpec``): ``UNIT_LOG_SCALE`` and
``UNIT_REVERSE_LOG_SCALE`` need a strictly positive feasible space; ``DiscreteValueSpec``
values in increasing order, at least 1e-10 apart, at most 1,000; parameter ids unique;
``GRID_SEARCH`` only over INTEGER, CATEGORICAL and DISCRETE parameters; categorical
parameters unscaled; inclusive ``min_value`` / ``max_value`` (Cascade: ``min < max``).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from pydantic import ValidationError

from cascade.core.errors import InvalidConfigError
from cascade.core.job_spec import ParameterSpec, TuningSpec
from cascade.core.pipeline_config import parse_pipeline_config

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"type": "double", "min": 0.0, "max": 0.5, "scale": "reverse_log"}, "strictly positive"),
    ({"type": "double", "min": -1.0, "max": 0.5, "scale": "log"}, "strictly positive"),
    ({"type": "integer", "min": 0, "max": 8, "scale": "log"}, "strictly positive"),
    ({"type": "discrete", "values": [0, 1, 2], "scale": "reverse_log"}, "strictly positive"),
    ({"type": "double", "min": 0.5, "max": 0.5}, "min < max"),
    ({"type": "double", "min": 0.9, "max": 0.1}, "min < max"),
    ({"type": "double", "min": 0.1}, "needs min and max"),
    ({"type": "double", "min": 0.1, "max": 1.0, "values": [0.2]}, "not values"),
    ({"type": "integer", "min": 1.5, "max": 4}, "whole numbers"),
    ({"type": "discrete", "values": [64, 32, 128]}, "increasing order"),
    ({"type": "discrete", "values": [32, 32]}, "increasing order"),
    ({"type": "discrete", "values": [1.0, 1.0 + 1e-12]}, "1e-10 apart"),
    ({"type": "discrete", "values": ["32", "64"]}, "must be numbers"),
    ({"type": "discrete", "values": [True, 2]}, "must be numbers"),
    ({"type": "discrete", "values": list(range(1001))}, "at most 1000"),
    ({"type": "discrete", "values": []}, "needs values"),
    ({"type": "discrete", "min": 1, "max": 2, "values": [1, 2]}, "not min and max"),
    ({"type": "categorical", "values": ["adam", "sgd", "adam"]}, "distinct, repeated: adam"),
    ({"type": "categorical", "values": [True, "true"]}, "distinct, repeated: true"),
    ({"type": "categorical", "values": ["a", "b"], "scale": "linear"}, "no scale"),
]


@pytest.mark.parametrize(("fields", "reason"), REFUSED)
def test_a_parameter_vertex_refuses_is_refused_naming_it(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason) as raised:
        ParameterSpec.model_validate({"name": "dropout", **fields})
    assert "'dropout'" in str(raised.value)


def test_the_pipeline_config_error_names_the_dataset_config_field() -> None:
    text = """
tuning:
  parameters:
    - {name: learning_rate, type: double, min: 0.0001, max: 0.1, scale: log}
    - {name: dropout, type: double, min: 0.0, max: 0.5, scale: reverse_log}
"""
    with pytest.raises(InvalidConfigError) as raised:
        parse_pipeline_config(text, where="gs://arts/datasets/credit/pipeline.yaml")

    message = str(raised.value)
    assert message.startswith("gs://arts/datasets/credit/pipeline.yaml: tuning.parameters.1: ")
    assert "'dropout'" in message
    assert "UNIT_REVERSE_LOG_SCALE" in message


@pytest.mark.parametrize(
    ("tuning", "reason"),
    [
        ("{algorithm: grid}", "grid \\(GRID_SEARCH\\).*shrinkage are double"),
        (
            "{parameters: [{name: u, type: discrete, values: [1, 2]},"
            " {name: u, type: integer, min: 1, max: 3}]}",
            "names must be unique, repeated: u",
        ),
    ],
)
def test_a_study_vertex_refuses_is_refused_in_the_config(tuning: str, reason: str) -> None:
    with pytest.raises(
        InvalidConfigError, match=f"pipeline.yaml: (<document>: )?tuning: .*{reason}"
    ):
        parse_pipeline_config(f"tuning: {tuning}", where="pipeline.yaml")


def test_the_default_search_space_is_the_model_familys_own() -> None:
    with pytest.raises(InvalidConfigError, match=r"grid.*learning_rate, dropout are double"):
        parse_pipeline_config(
            "training: {model: network}\ntuning: {algorithm: grid}", where="pipeline.yaml"
        )
    with pytest.raises(
        InvalidConfigError,
        match=r"tuning\.parameters: model boosted_trees does not read hidden_units",
    ):
        parse_pipeline_config(
            "tuning: {parameters: [{name: hidden_units, type: discrete, values: [8, 16]}]}",
            where="pipeline.yaml",
        )
    with pytest.raises(InvalidConfigError, match="model auto cannot be tuned"):
        parse_pipeline_config("training: {model: auto}\ntuning: {enabled: true}", where="p.yaml")


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "double", "min": 1e-4, "max": 0.1, "scale": "log"},
        {"type": "double", "min": 0.01, "max": 0.5, "scale": "reverse_log"},
        {"type": "double", "min": -1.0, "max": 1.0},
        {"type": "integer", "min": 1, "max": 4, "scale": "log"},
        {"type": "discrete", "values": [0.5, 1, 2.5], "scale": "log"},
        {"type": "categorical", "values": ["adam", "sgd", True]},
    ],
)
def test_what_vertex_accepts_is_accepted(fields: dict[str, Any]) -> None:
    ParameterSpec.model_validate({"name": "p", **fields})


def _sample(parameter: ParameterSpec, trials: int) -> list[float]:
    from cascade.localcloud.tuner import distributions, make_sampler, value_of

    tuning = TuningSpec(algorithm="random", max_trials=trials, parameters=[parameter])
    study = optuna.create_study(sampler=make_sampler(tuning, "seed"))
    space = distributions(tuning)
    values = []
    for _ in range(trials):
        trial = study.ask(space)
        value = value_of(parameter, trial.params[parameter.name])
        assert isinstance(value, float)
        values.append(value)
        study.tell(trial, 0.0)
    return values


def test_reverse_log_is_searched_leaning_toward_max() -> None:
    """UNIT_REVERSE_LOG_SCALE: ``x = max + min - y`` with ``log(y)`` uniform, so values
    close to the top of the feasible space are spread out more: they lean toward max."""
    low, high = 0.01, 1.0
    reverse = ParameterSpec(name="p", type="double", min=low, max=high, scale="reverse_log")
    values = _sample(reverse, 2000)

    assert all(low <= value <= high for value in values)
    # P(x <= q) = P(y >= low + high - q) = 1 - log((low + high - q) / low) / log(high / low)
    for q in (0.5, 0.9, 0.99):
        expected = 1 - math.log((low + high - q) / low) / math.log(high / low)
        observed = sum(value <= q for value in values) / len(values)
        assert observed == pytest.approx(expected, abs=0.04)
    assert sum(value > 0.9 for value in values) / len(values) > 0.45  # linear: 0.1
    log = ParameterSpec(name="p", type="double", min=low, max=high, scale="log")
    assert sum(value > 0.9 for value in _sample(log, 2000)) / 2000 < 0.05


def test_reverse_log_integers_map_back_into_their_range() -> None:
    from cascade.localcloud.tuner import value_of

    parameter = ParameterSpec(name="p", type="integer", min=1, max=100, scale="reverse_log")
    assert value_of(parameter, 1) == 100
    assert value_of(parameter, 100) == 1
    assert value_of(parameter, 10) == 91
