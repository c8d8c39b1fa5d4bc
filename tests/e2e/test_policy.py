"""Continuous training that learns from change (docs/validation.md, "Policy"), end to end.

A healthy file from a world that moved is accepted with its value skews recorded and
alerted, trains, and the model trained on all accepted data with it serves. The served
model is scored on each labelled file, and its decay retrains though no input drifted.
A file quarantined for a schema skew, released over the review function with a reason,
trains.
"""

from __future__ import annotations

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.runs import run_id_for_request
from cascade.evaluation.monitoring import read_series
from cascade.steps.quarantine_review import release_run_id
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


def _flipped_labels(data: bytes) -> bytes:
    """The same inputs, the opposite outcome: a world where the model's rule broke while
    every input looks as before."""
    header, *rows = data.decode().splitlines()
    label = header.split(",").index("defaulted")
    flipped = []
    for row in rows:
        cells = row.split(",")
        cells[label] = "1" if cells[label] == "0" else "0"
        flipped.append(",".join(cells))
    return ("\n".join([header, *flipped]) + "\n").encode()


def test_the_served_model_is_scored_on_each_labelled_file_and_its_decay_retrains(
    scenario: Scenario,
) -> None:
    scenario.configure(NO_THRESHOLDS)
    scenario.upload(rows=2000, seed=1, name="2026-01")
    scenario.settle()
    steady = scenario.upload(rows=1000, seed=2, name="2026-02")
    scenario.settle()
    name = f"{scenario.dataset}/2026-03.csv"
    generation = scenario.cloud.upload(name, _flipped_labels(sample_csv(1000, seed=3)))
    scenario.sent += 1
    decayed = scenario.cloud.run_id_for(name, generation)
    scenario.settle(timeout=600)

    series = {
        point.run_id: point for point in read_series(scenario.cloud.artifacts, scenario.dataset)
    }
    assert series[steady].status == "scored"
    assert series[steady].model_version is not None
    assert series[steady].rows_scored == 1000
    assert series[steady].value("loss") is not None
    point = series[decayed]
    assert point.status == "scored"
    assert point.decay is not None
    assert point.decay.decayed, point.detail
    retrain = scenario.cloud.ledger.get(run_id_for_request(scenario.dataset, f"monitor:{decayed}"))
    assert retrain is not None, "the decay asked for no training"
    assert "decayed" in (retrain.trigger.reason or "")
    assert "train" in retrain.steps


def test_a_quarantined_file_released_with_a_reason_over_http_trains(scenario: Scenario) -> None:
    scenario.configure(NO_THRESHOLDS)
    scenario.upload(rows=2000, seed=1, name="2026-01")
    scenario.settle()
    broken = scenario.upload(rows=1000, seed=8, name="2026-02", drift=True)  # unseen regions
    quarantined = scenario.wait(broken)
    assert quarantined.state == "rejected"
    answer = scenario.cloud.call_http_function(
        "review-http",
        json={
            "action": "release",
            "run_id": broken,
            "reason": "overseas customers are real: sales opened two regions",
            "actor": "risk-team@example.com",
        },
        timeout=120,
    )
    again = scenario.cloud.call_http_function(
        "review-http",
        json={"action": "release", "run_id": broken, "reason": "twice", "actor": "a@example.com"},
        timeout=60,
    )
    runs = {run.run_id: run for run in scenario.settle(timeout=600)}

    assert answer.status_code == 200, answer.text
    assert again.status_code == 409, again.text
    released = runs[release_run_id(scenario.dataset, broken)]
    assert released.state == "succeeded", released.error
    assert "risk-team@example.com" in released.trigger.reason
    assert "train" in released.steps
    assert runs[broken].state == "rejected"  # the quarantined run keeps its verdict
    assert "review" in runs[broken].steps
    final = latest_transform(scenario.cloud.artifacts, scenario.dataset)
    assert final is not None
    assert final.files == 2  # the released file is trained on
