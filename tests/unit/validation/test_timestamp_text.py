"""A timestamp column is the text the file holds, on the dataset's first file as on later
ones (found by bench/drift_quality.py: every value of `time_hour` was "unseen")."""

from __future__ import annotations

from pathlib import Path

from cascade.core.validation_config import Check, ValidationConfig
from cascade.validation.anomalies import Baseline
from cascade.validation.validator import validate_file
from tests.unit.validation.builders import csv_source


def _hours(first_hour: int, rows: int) -> str:
    lines = ["amount,time_hour"]
    for index in range(rows):
        hour = first_hour + index % 24
        lines.append(f"{index % 50},2013-03-{1 + hour // 24:02d}T{hour % 24:02d}:00:00Z")
    return "\n".join(lines) + "\n"


def test_a_timestamp_column_keeps_its_text_on_the_first_file_and_on_later_ones(
    tmp_path: Path,
) -> None:
    config = ValidationConfig()
    first = validate_file(
        csv_source(tmp_path, _hours(0, 600), "first.csv"), schema=None, baseline=None, config=config
    )
    second = validate_file(
        csv_source(tmp_path, _hours(0, 600), "second.csv"),
        schema=first.schema,
        baseline=Baseline(first.summary, files=1),
        config=config,
    )

    feature = first.summary.features["time_hour"]
    assert feature.strings is not None
    assert "2013-03-01T10:00:00Z" in dict(feature.strings.value_counts(100))
    assert second.accepted
    assert not [f for f in second.result.findings if f.feature == "time_hour"], [
        str(f) for f in second.result.findings
    ]
    assert Check.UNSEEN_VALUES not in {f.check for f in second.result.findings}
