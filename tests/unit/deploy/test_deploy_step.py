"""The deploy step: only blessed models are deployed; canary outcome ends the run."""

from __future__ import annotations

from typing import Any

import pytest

from cascade.core.context import StepContext
from cascade.core.deployment_config import DeploymentConfig
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, ModelBlessed
from cascade.deploy.deployer import CanaryReport, Candidate
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.serving.state import DeployedVersion
from cascade.steps.deploy import handle_model_blessed
from tests.unit.evaluation.builders import DATASET, MODEL_URI, NOW, RUN_ID, start_run


class FakeDeployer:
    """Records the calls; the canary passes unless told otherwise."""

    target = "fake"

    def __init__(self, canary_passes: bool = True) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.canary_passes = canary_passes

    def register(self, candidate: Candidate, config: DeploymentConfig) -> DeployedVersion:
        self.calls.append(("register", candidate))
        return DeployedVersion(
            version="3",
            run_id=candidate.run_id,
            model_uri=candidate.model_uri,
            state="standby",
            deployed_at=NOW,
        )

    def start_canary(
        self, candidate: Candidate, version: DeployedVersion, config: DeploymentConfig
    ) -> int:
        self.calls.append(("start_canary", version.version))
        return config.canary_traffic_percent

    def check_canary(
        self, dataset: str, version: str, instances: list[dict[str, Any]], config: DeploymentConfig
    ) -> CanaryReport:
        self.calls.append(("check_canary", version))
        errors = 0 if self.canary_passes else 20
        return CanaryReport(
            self.canary_passes,
            20,
            errors,
            1.5,
            "p95 1.5 ms" if self.canary_passes else "20/20 requests failed",
        )

    def promote(self, dataset: str, version: str) -> None:
        self.calls.append(("promote", version))

    def roll_back(self, dataset: str, version: str, reason: str) -> None:
        self.calls.append(("roll_back", version))

    def retire(self, dataset: str, keep: int) -> list[str]:
        self.calls.append(("retire", keep))
        return ["1"]

    def restore_previous(self, dataset: str) -> tuple[str, str]:
        raise AssertionError("not part of a rollout")


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
