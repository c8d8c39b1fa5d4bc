"""The deploy step: only blessed models are deployed; canary outcome ends the run."""

from __future__ import annotations

import pytest

from cascade.core.context import StepContext
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, ModelBlessed
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.steps.deploy import handle_model_blessed
from tests.unit.deploy.fakes import FakeDeployer
from tests.unit.evaluation.builders import DATASET, MODEL_URI, NOW, RUN_ID, start_run


def evaluation(ctx: StepContext, verdict: str, infra: str = "pass") -> None:
    record = EvaluationRecord.model_validate(
        {
            "dataset": DATASET,
            "run_id": RUN_ID,
            "model_uri": MODEL_URI,
            "metrics_uri": "m",
            "infra_check_uri": "i",
            "verdict": verdict,
            "first_run": True,
            "first_run_policy": "absolute_only",
            "summary": verdict,
            "evaluated_at": NOW,
            "checks": [
                {"name": "load-and-probe", "kind": "infra", "tier": "blocking", "verdict": infra}
            ],
        }
    )
    ctx.artifacts.write_json(evaluation_path(RUN_ID), record)


BLESSED = ModelBlessed(dataset=DATASET, run_id=RUN_ID, model_uri=MODEL_URI)


@pytest.fixture
def ctx(step_context: StepContext) -> StepContext:
    start_run(step_context.ledger)
    return step_context


def test_a_blessed_model_is_rolled_out_and_the_run_succeeds(ctx: StepContext) -> None:
    evaluation(ctx, "blessed_with_warnings")
    deployer = FakeDeployer()

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    assert [name for name, _ in deployer.calls] == [
        "register",
        "start_canary",
        "check_canary",
        "promote",
        "retire",
    ]
    assert deployer.calls[0][1].model_uri == MODEL_URI
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "succeeded"
    assert run.steps["deploy"].outputs["version"] == "3"
    assert run.steps["deploy"].outputs["canary"]["passed"] is True
    assert run.lineage["deployed_version"] == "3"


@pytest.mark.parametrize(
    ("verdict", "infra"),
    [("not_blessed", "pass"), ("awaiting_approval", "pass"), ("force_blessed", "fail")],
)
def test_a_model_that_is_not_blessed_is_never_deployed(
    ctx: StepContext, verdict: str, infra: str
) -> None:
    evaluation(ctx, verdict, infra)
    deployer = FakeDeployer()

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    assert deployer.calls == []
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "failed"
    assert run.error is not None
    assert "not deploying" in run.error


def test_a_model_without_an_evaluation_is_never_deployed(ctx: StepContext) -> None:
    deployer = FakeDeployer()

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    assert deployer.calls == []


def test_a_failed_canary_is_rolled_back_and_alerted(ctx: StepContext) -> None:
    evaluation(ctx, "blessed")
    deployer = FakeDeployer(canary_passes=False)

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    assert [name for name, _ in deployer.calls][-1] == "roll_back"
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "failed"
    assert run.error is not None
    assert "rolled back" in run.error
    assert isinstance(ctx.bus, RecordingBus)
    [alert] = ctx.bus.of_type(Alert)
    assert "20/20 requests failed" in alert.summary  # type: ignore[attr-defined]


def test_a_redelivered_blessing_deploys_once(ctx: StepContext) -> None:
    evaluation(ctx, "blessed")
    deployer = FakeDeployer()

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)
    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    assert [name for name, _ in deployer.calls].count("register") == 1
