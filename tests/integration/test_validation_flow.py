"""Validation on the local cloud: good data flows on to transform; data whose world moved
flows on and asks for retraining, saying why; schema-broken data stops."""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from google.protobuf import text_format

from cascade.cli.sample_data import sample_csv
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord
from cascade.validation.tfmd import anomalies_pb2
from tests.conftest import LocalCloud
from tests.unit.validation.builders import moved_sample_csv

pytestmark = pytest.mark.integration

Type = anomalies_pb2.AnomalyInfo


def _dataset() -> str:
    return f"ds{uuid.uuid4().hex[:8]}"


def _without_and_with_column(data: bytes, dropped: str, added: str) -> bytes:
    """The CSV with column ``dropped`` removed and a new column ``added``."""
    rows = list(csv.reader(io.StringIO(data.decode())))
    index = rows[0].index(dropped)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for number, row in enumerate(rows):
        kept = row[:index] + row[index + 1 :]
        writer.writerow([*kept, added if number == 0 else "web"])
    return out.getvalue().encode()


def _accept(local_cloud: LocalCloud, name: str, data: bytes) -> RunRecord:
    generation = local_cloud.upload(name, data)

    def transformed(run: RunRecord) -> bool:
        step = run.steps.get("transform")
        return run.state != "running" or (step is not None and step.state == "succeeded")

    return local_cloud.wait_for_run(local_cloud.run_id_for(name, generation), transformed)


def test_good_file_is_accepted_and_triggers_transform(local_cloud: LocalCloud) -> None:
    dataset = _dataset()
    local_cloud.push_sample_config(dataset)
    name = f"{dataset}/day-1.csv"

    run = _accept(local_cloud, name, sample_csv(600, seed=1))

    assert run.steps["validate"].state == "succeeded", run.error
    assert run.steps["transform"].state == "succeeded", run.error
    stats = local_cloud.artifacts.read(f"{RunPaths(run.run_id).step_dir('validation')}/stats.pb")
    assert stats is not None


def test_a_healthy_file_whose_world_moved_is_accepted_and_asks_to_retrain_naming_the_skews(
    local_cloud: LocalCloud,
) -> None:
    dataset = _dataset()
    local_cloud.push_sample_config(dataset)
    first = _accept(local_cloud, f"{dataset}/day-1.csv", sample_csv(2000, seed=1))
    assert first.steps["transform"].state == "succeeded", first.error

    run = _accept(local_cloud, f"{dataset}/day-2.csv", moved_sample_csv(1000, seed=8))

    assert run.steps["validate"].state == "succeeded", run.error
    skewed = {skew["feature"] for skew in run.steps["validate"].outputs["value_skews"]}
    assert {"income", "credit_score", "employment"} <= skewed
    assert run.steps["transform"].state == "succeeded", run.error
    reason = run.steps["transform"].outputs["train_reason"]
    assert reason.startswith(f"value skew in {dataset}/day-2.csv: "), reason
    assert run.steps["transform"].outputs["files"] == 2


def test_a_schema_broken_file_is_rejected_with_its_anomalies_and_nothing_runs_after(
    local_cloud: LocalCloud,
) -> None:
    dataset = _dataset()
    first = _accept(local_cloud, f"{dataset}/day-1.csv", sample_csv(600, seed=1))
    assert first.steps["validate"].state == "succeeded", first.error
    drifted = _without_and_with_column(
        sample_csv(600, seed=2, drift=True), dropped="term_months", added="channel"
    )
    name = f"{dataset}/day-2.csv"

    generation = local_cloud.upload(name, drifted)
    run = local_cloud.wait_for_run(
        local_cloud.run_id_for(name, generation), lambda record: record.state != "running"
    )

    assert run.state == "rejected"
    assert "term_months" in (run.error or "")
    folder = RunPaths(run.run_id).step_dir("validation")
    stored = local_cloud.artifacts.read(f"{folder}/anomalies.pbtxt")
    assert stored is not None
    anomalies = text_format.Parse(stored.data.decode(), anomalies_pb2.Anomalies())
    reasons = {
        name: {reason.type for reason in info.reason}
        for name, info in anomalies.anomaly_info.items()
    }
    assert Type.SCHEMA_MISSING_COLUMN in reasons["term_months"]
    assert Type.SCHEMA_NEW_COLUMN in reasons["channel"]
    assert Type.ENUM_TYPE_UNEXPECTED_STRING_VALUES in reasons["region"]
    # The income drift alone would retrain; beside a schema skew it is only recorded.
    value_skews = run.steps["validate"].outputs["value_skews"]
    assert "income" in {skew["feature"] for skew in value_skews}
    assert not any("'income'" in error for error in run.steps["validate"].outputs["errors"])
    # Nothing is on its way: whatever validate published would have been delivered. The
    # cloud is shared with the tests before (a retrain's chain may still be delivering).
    local_cloud.wait_until_router_idle(timeout=180)
    settled = local_cloud.ledger.get(run.run_id)
    assert settled is not None
    assert set(settled.steps) == {"validate"}
