"""Continuous training that learns from change (docs/validation.md, "Policy"), end to end.

A healthy file from a world that moved is accepted with its value skews recorded and
alerted, trains, and the model trained on all accepted data with it serves.
"""

from __future__ import annotations

import pytest

from cascade.transform.catalog import latest_transform, read_transform
from tests.e2e.conftest import NO_THRESHOLDS, Scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_a_file_from_a_moved_world_is_accepted_trains_and_the_model_with_it_serves(
    scenario: Scenario,
) -> None:
    scenario.configure(NO_THRESHOLDS)
    first = scenario.upload(rows=2000, seed=1, name="2026-01")
    scenario.settle()

    moved = scenario.upload(rows=1000, seed=8, name="2026-02", drift=True, unseen_regions=False)
    runs = {run.run_id: run for run in scenario.settle(timeout=600)}

    run = runs[moved]
    validate = run.steps["validate"]
    assert validate.state == "succeeded", validate.error
    skews = {(skew["feature"], skew["check"]) for skew in validate.outputs["value_skews"]}
    assert ("income", "drift") in skews
    assert ("defaulted", "label_shift") in skews
    reason = run.steps["transform"].outputs["train_reason"]
    assert reason.startswith(f"value skew in {scenario.dataset}/2026-02.csv: ")
    final = latest_transform(scenario.cloud.artifacts, scenario.dataset)
    assert final is not None
    assert final.files == 2  # judged and trained on all accepted data, the new file with it
    spec = read_transform(scenario.cloud.artifacts, final.run_id)
    assert spec is not None
    assert any(f.uri.endswith("/2026-02.csv") for f in spec.snapshot)
    jobs = sorted(scenario.jobs(), key=lambda job: job.created_at)
    assert jobs[-1].spec.transform_spec_uri == final.transform_uri
    serving = scenario.serving()
    assert serving is not None
    live = [v for v in serving.versions if serving.traffic.get(v.version)]
    assert [v.run_id for v in live] == [jobs[-1].spec.run_id]
    assert jobs[-1].spec.run_id != first
    assert scenario.predict().status_code == 200
