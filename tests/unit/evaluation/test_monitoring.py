"""Continued evaluation: each labelled accepted file is scored by the model serving then."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from cascade.core.context import StepContext
from cascade.core.evaluation_config import MonitoringConfig
from cascade.core.messages import Alert, DataValidated, TrainRequest
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.runs import RunRecord, Trigger
from cascade.evaluation.monitoring import MonitoringPoint, decay_check, read_series
from cascade.serving.state import DeployedVersion, ServingState
from cascade.steps.monitor import handle_data_validated
from cascade.trainer.metrics import MetricSet, ModelMetrics
from cascade.transform.spec import (
    LabelSpec,
    NumericTransform,
    SplitSpec,
    TransformSpec,
    VocabularyTransform,
)
from cascade.validation.manifest import AcceptedFile
from tests.unit.deploy.fakes import FakeDeployer
from tests.unit.evaluation.builders import NOW, metrics_report, model_metrics
from tests.unit.transform.landing import MemoryLanding

DATASET = "credit"
RUN_ID = "credit-1111222233334444"
SERVING_RUN = "credit-aaaabbbbccccdddd"
SERVING_URI = f"gs://cascade-artifacts/runs/{SERVING_RUN}/training/model"
PIPELINE = """\
label: defaulted
problem_type: binary
training:
  slice_features: [city]
evaluation:
  monitoring:
    metric: loss
    max_drop: 0.5
    min_rows: 10
{extra}"""


def _csv(rows: int, *, label: bool = True, flip: bool = False, bad_row: int | None = None) -> bytes:
    """Customers older than 40 default; ``flip`` makes the served model's answers wrong."""
    header = "age,city" + (",defaulted" if label else "")
    lines = [header]
    for index in range(rows):
        age = 20 + (index * 7) % 50
        city = ("paris", "lyon")[index % 2]
        truth = age > 40
        value = "maybe" if bad_row == index + 1 else ("no" if truth == flip else "yes")
        lines.append(f"{age},{city}" + (f",{value}" if label else ""))
    return ("\n".join(lines) + "\n").encode()


def _answer(row: dict[str, Any]) -> dict[str, Any]:
    yes = 0.9 if row["age"] > 40 else 0.1
    return {"probabilities": [1 - yes, yes], "key": row["key"]}


def _spec() -> TransformSpec:
    return TransformSpec(
        dataset=DATASET,
        run_id=SERVING_RUN,
        label=LabelSpec(name="defaulted", problem_type="binary", classes=["no", "yes"]),
        features=[
            NumericTransform(name="age", mean=41.5, std=9.0, fill_value=41.5),
            VocabularyTransform(name="city", vocabulary=["paris", "lyon"]),
        ],
        split=SplitSpec(),
        snapshot=[],
        train_files=[],
        eval_files=[],
        train_rows=0,
        eval_rows=0,
        created_at=NOW,
    )


def _serve(ctx: StepContext) -> None:
    """Version 2 (the run SERVING_RUN, evaluated at loss 0.2) serves all traffic."""
    state = ServingState(
        dataset=DATASET,
        target="local",
        endpoint=DATASET,
        versions=[
            DeployedVersion(
                version="2",
                run_id=SERVING_RUN,
                model_uri=SERVING_URI,
                state="serving",
                deployed_at=NOW,
            )
        ],
        traffic={"2": 100},
        updated_at=NOW,
    )
    ctx.artifacts.write_json(DatasetPaths(DATASET).serving, state)
    ctx.artifacts.write_json(
        f"{RunPaths(SERVING_RUN).step_dir('transform')}/transform.json", _spec()
    )
    report = metrics_report(model_metrics(SERVING_URI, {"loss": 0.2, "auc": 0.9}))
    ctx.artifacts.write(
        f"{RunPaths(SERVING_RUN).step_dir('training')}/metrics.json",
        json.dumps(report).encode(),
    )


def _accept(
    ctx: StepContext, landing: MemoryLanding, data: bytes, extra_config: str = ""
) -> DataValidated:
    ctx.artifacts.write(
        DatasetPaths(DATASET).pipeline_config, PIPELINE.format(extra=extra_config).encode()
    )
    uri = landing.put(f"{DATASET}/2026-02.csv", data, generation=7)
    manifest = AcceptedFile(
        file_id=RUN_ID,
        run_id=RUN_ID,
        uri=uri,
        generation=7,
        num_examples=data.count(b"\n") - 1,
        stats_uri="gs://cascade-artifacts/stats",
        schema_uri="gs://cascade-artifacts/schema",
        accepted_at=NOW,
    )
    ctx.artifacts.write_json(DatasetPaths(DATASET).accepted_manifest(RUN_ID), manifest)
    ctx.ledger.ensure(
        RunRecord(
            run_id=RUN_ID,
            dataset=DATASET,
            trigger=Trigger(kind="object", uri=uri, generation=7),
            state="running",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    return DataValidated.model_validate(
        {
            "dataset": DATASET,
            "run_id": RUN_ID,
            "source": {
                "bucket": "cascade-landing",
                "name": f"{DATASET}/2026-02.csv",
                "generation": 7,
            },
        }
    )


def _point(ctx: StepContext) -> MonitoringPoint:
    found = ctx.artifacts.read_model(
        DatasetPaths(DATASET).monitoring_point(RUN_ID), MonitoringPoint
    )
    assert found is not None
    return found[0]


def _published(ctx: StepContext) -> list[Any]:
    return list(ctx.bus.published)  # type: ignore[attr-defined]


def test_a_labelled_file_is_scored_by_the_serving_version_and_its_metrics_are_recorded(
    step_context: StepContext,
) -> None:
    landing, deployer = MemoryLanding(), FakeDeployer(predictor=_answer)
    _serve(step_context)
    message = _accept(step_context, landing, _csv(40))

    outcome = handle_data_validated(
        step_context, message, event_id="e1", opener=landing, deployer=deployer
    )

    assert outcome is not None
    assert outcome.state == "succeeded"
    point = _point(step_context)
    assert (point.status, point.model_version, point.model_uri) == ("scored", "2", SERVING_URI)
    assert point.rows_scored == 40
    assert point.metrics is not None
    assert point.metrics.overall.examples == 40
    assert point.metrics.overall.metrics["accuracy"] == pytest.approx(1.0)
    assert point.metrics.overall.metrics["loss"] == pytest.approx(-math.log(0.9))
    assert sorted(s.value for s in point.metrics.slices) == ["lyon", "paris"]
    assert point.decay is not None
    assert point.decay.judged
    assert not point.decay.decayed
    assert point.decay.reference == pytest.approx(0.2)
    [(_, (dataset, version, rows))] = [c for c in deployer.calls if c[0] == "predict"]
    assert (dataset, version) == (DATASET, "2")
    assert set(rows[0]) == {"age", "city", "key"}  # the signature's inputs, key included
    assert all(value is not None for row in rows for value in row.values())
    assert _published(step_context) == []
    run = step_context.ledger.get(RUN_ID)
    assert run is not None
    assert run.steps["monitor"].state == "succeeded"
    assert [p.run_id for p in read_series(step_context.artifacts, DATASET)] == [RUN_ID]


def test_a_file_without_the_label_column_is_recorded_as_unlabelled_and_nothing_else_happens(
    step_context: StepContext,
) -> None:
    landing, deployer = MemoryLanding(), FakeDeployer(predictor=_answer)
    _serve(step_context)
    message = _accept(step_context, landing, _csv(40, label=False))

    handle_data_validated(step_context, message, event_id="e1", opener=landing, deployer=deployer)

    point = _point(step_context)
    assert point.status == "no_labels"
    assert "defaulted" in point.detail
    assert deployer.calls == []
    assert _published(step_context) == []


def test_with_no_model_serving_the_file_is_recorded_as_not_scored_and_nothing_else_happens(
    step_context: StepContext,
) -> None:
    landing, deployer = MemoryLanding(), FakeDeployer(predictor=_answer)
    message = _accept(step_context, landing, _csv(40))

    handle_data_validated(step_context, message, event_id="e1", opener=landing, deployer=deployer)

    point = _point(step_context)
    assert point.status == "no_model"
    assert point.detail == "no model serves credit: nothing to score"
    assert deployer.calls == []
    assert _published(step_context) == []


def test_a_drop_past_the_threshold_alerts_and_asks_for_training_once(
    step_context: StepContext,
) -> None:
    landing, deployer = MemoryLanding(), FakeDeployer(predictor=_answer)
    _serve(step_context)
    message = _accept(step_context, landing, _csv(40, flip=True))

    handle_data_validated(step_context, message, event_id="e1", opener=landing, deployer=deployer)
    again = handle_data_validated(
        step_context, message, event_id="e2", opener=landing, deployer=deployer
    )

    assert again is None  # a redelivery of finished work
    alert, request = _published(step_context)
    assert isinstance(alert, Alert)
    assert (alert.severity, alert.step, alert.run_id) == ("WARNING", "monitor", RUN_ID)
    assert isinstance(request, TrainRequest)
    assert request.request_id == f"monitor:{RUN_ID}"
    assert request.run_id is None  # a run of its own, on the latest transform
    loss = -math.log(0.1)
    assert f"loss 0.2 -> {loss:.6g}" in request.reason
    assert "max_drop 0.5 relative" in request.reason
    assert "2026-02.csv" in request.reason
    point = _point(step_context)
    assert point.decay is not None
    assert point.decay.decayed
    assert len([c for c in deployer.calls if c[0] == "predict"]) == 1


def test_a_drop_within_the_threshold_publishes_nothing(step_context: StepContext) -> None:
    landing, deployer = MemoryLanding(), FakeDeployer(predictor=_answer)
    _serve(step_context)
    message = _accept(step_context, landing, _csv(40), extra_config="    max_drop: 0.0\n")
    # max_drop 0 would alert on any drop; the served model does better than at evaluation.

    handle_data_validated(step_context, message, event_id="e1", opener=landing, deployer=deployer)

    assert _published(step_context) == []
    point = _point(step_context)
    assert point.decay is not None
    assert point.decay.judged
    assert not point.decay.decayed


def test_a_label_that_is_not_a_class_is_named_with_its_row_and_the_run_goes_on(
    step_context: StepContext,
) -> None:
    landing, deployer = MemoryLanding(), FakeDeployer(predictor=_answer)
    _serve(step_context)
    message = _accept(step_context, landing, _csv(40, bad_row=3))

    outcome = handle_data_validated(
        step_context, message, event_id="e1", opener=landing, deployer=deployer
    )

    assert outcome is not None
    assert outcome.state == "failed"
    point = _point(step_context)
    assert point.status == "failed"
    assert "row 3: label 'maybe' is not one of the classes ['no', 'yes']" in point.detail
    assert "column 'defaulted'" in point.detail
    [alert] = _published(step_context)
    assert isinstance(alert, Alert)
    assert alert.severity == "WARNING"
    assert "row 3" in alert.summary
    run = step_context.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "running"
    assert deployer.calls == []


def test_beyond_max_rows_every_kth_row_is_scored_and_the_point_says_so(
    step_context: StepContext,
) -> None:
    landing, deployer = MemoryLanding(), FakeDeployer(predictor=_answer)
    _serve(step_context)
    message = _accept(step_context, landing, _csv(40), extra_config="    max_rows: 10\n")

    handle_data_validated(step_context, message, event_id="e1", opener=landing, deployer=deployer)

    point = _point(step_context)
    assert (point.rows_labelled, point.rows_scored, point.sampled_every) == (40, 10, 4)


def test_fewer_rows_than_min_rows_are_recorded_but_not_judged() -> None:
    metrics = ModelMetrics(
        model_uri="m", overall=MetricSet(examples=5, metrics={"loss": 9.0}), slices=[]
    )

    check = decay_check(MonitoringConfig(min_rows=10), metrics, 0.2, "evaluation")

    assert not check.judged
    assert not check.decayed
    assert check.detail == "5 rows scored < min_rows 10: not judged"


def test_a_higher_is_better_metric_decays_downward_by_an_absolute_drop() -> None:
    metrics = ModelMetrics(
        model_uri="m", overall=MetricSet(examples=500, metrics={"auc": 0.80}), slices=[]
    )
    config = MonitoringConfig(metric="auc", max_drop=0.05, relative=False)

    check = decay_check(config, metrics, 0.90, "evaluation")

    assert check.judged
    assert check.decayed
    assert check.drop == pytest.approx(0.10)
    assert check.detail.startswith("auc 0.9 -> 0.8 on 500 rows: drop 0.1 > 0.05 allowed")


def test_the_run_report_and_cascade_status_show_the_served_models_points(
    step_context: StepContext,
) -> None:
    from cascade.cli.status import monitoring_cells, monitoring_table
    from cascade.report.collect import collect_run_report
    from cascade.report.render import render_html

    landing, deployer = MemoryLanding(), FakeDeployer(predictor=_answer)
    _serve(step_context)
    message = _accept(step_context, landing, _csv(40, flip=True))
    handle_data_validated(step_context, message, event_id="e1", opener=landing, deployer=deployer)

    report = collect_run_report(step_context.artifacts, RUN_ID)
    html = render_html(report)
    [point] = read_series(step_context.artifacts, DATASET)

    assert report.monitoring is not None
    assert [row.verdict for row in report.monitoring.recent] == ["decayed: retraining asked for"]
    assert 'id="monitoring"' in html
    assert "decayed: retraining asked for" in html
    assert monitoring_cells(point) == (
        DATASET,
        RUN_ID,
        "2026-02.csv",
        "v2",
        "40",
        f"loss {-math.log(0.1):.4g} (ref 0.2)",
        "decayed: retrain",
    )
    assert monitoring_table(step_context.artifacts, [DATASET]) is not None
    assert monitoring_table(step_context.artifacts, ["other"]) is None
