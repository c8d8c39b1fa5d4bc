"""The sample data: a drifted file is rejected for drift against the plain one; a plain one is not.

This is what `cascade demo` relies on in its second act, with the default thresholds
(Jensen-Shannon 0.1 for numbers, L-infinity 0.1 for strings).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.cli.demo_explain import drift_rows
from cascade.cli.sample_data import sample_csv
from cascade.core.validation_config import ValidationConfig
from cascade.validation.anomalies import Baseline
from cascade.validation.names import FileFormat
from cascade.validation.source import DataSource
from cascade.validation.validator import FileValidation, validate_file

CONFIG = ValidationConfig()


def _validate(
    tmp_path: Path, name: str, data: bytes, against: FileValidation | None = None
) -> FileValidation:
    path = tmp_path / name
    path.write_bytes(data)
    return validate_file(
        DataSource.local_file(str(path), FileFormat.CSV),
        schema=None if against is None else against.schema,
        baseline=None if against is None else Baseline(against.summary, 1),
        config=CONFIG,
    )


@pytest.fixture(scope="module")
def accepted(tmp_path_factory: pytest.TempPathFactory) -> FileValidation:
    return _validate(tmp_path_factory.mktemp("baseline"), "day-1.csv", sample_csv(2000))


@pytest.mark.parametrize(("rows", "seed"), [(1000, 8), (3000, 8), (1000, 21)])
def test_the_drifted_file_drifts_in_income_credit_score_and_employment(
    tmp_path: Path, accepted: FileValidation, rows: int, seed: int
) -> None:
    drifted = _validate(
        tmp_path, "day-2.csv", sample_csv(rows, seed=seed, drift=True), against=accepted
    )

    assert not drifted.accepted
    rows_by_feature = {row.feature: row for row in drift_rows(drifted.result.anomalies)}
    assert {"income", "credit_score", "employment"} <= set(rows_by_feature)
    for feature in ("income", "credit_score", "employment"):
        assert rows_by_feature[feature].distance > 1.2 * rows_by_feature[feature].threshold


def test_a_plain_file_from_another_seed_is_accepted(
    tmp_path: Path, accepted: FileValidation
) -> None:
    plain = _validate(tmp_path, "day-2.csv", sample_csv(1000, seed=8), against=accepted)

    assert plain.accepted, [str(finding) for finding in plain.result.errors]
    assert drift_rows(plain.result.anomalies) == []
