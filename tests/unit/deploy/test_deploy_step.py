"""The deploy step: only blessed models are deployed; canary outcome ends the run."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from cascade.core.context import StepContext
from cascade.core.deployment_config import DeploymentConfig
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, ModelBlessed
from cascade.core.pipeline_config import push_pipeline_config
from cascade.deploy.deployer import Candidate
from cascade.deploy.smoke import smoke_instances
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.serving.state import DeployedVersion
from cascade.steps.deploy import handle_model_blessed
from cascade.transform.spec import (
    LabelSpec,
    NumericTransform,
    SplitSpec,
    TransformSpec,
    VocabularyTransform,
)
from tests.unit.conftest import Clock
from tests.unit.deploy.fakes import DEPLOYED_AT, FakeDeployer
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
CONFIG = DeploymentConfig(canary_traffic_percent=25, keep_versions=3)
"""The dataset's deployment config (not the defaults: the deployer must get this one)."""
CANDIDATE = Candidate(
    dataset=DATASET, run_id=RUN_ID, model_uri=MODEL_URI, lineage={"run_id": RUN_ID}
)
VERSION = DeployedVersion(
    version="3", run_id=RUN_ID, model_uri=MODEL_URI, state="standby", deployed_at=DEPLOYED_AT
)
ROLLED_OUT: list[tuple[str, tuple[Any, ...]]] = [
    ("register", (CANDIDATE, CONFIG)),
    ("start_canary", (CANDIDATE, VERSION, CONFIG)),
    ("check_canary", (DATASET, "3", [], CONFIG)),
    ("promote", (DATASET, "3")),
    ("retire", (DATASET, 3)),
]
"""Every call of a rollout whose canary passes, in order, with its exact arguments (no
transform spec was written, so the canary gets no smoke instances)."""


@pytest.fixture
def ctx(step_context: StepContext) -> StepContext:
    start_run(step_context.ledger)
    push_pipeline_config(
        step_context.artifacts,
        DATASET,
        b"deployment:\n  canary_traffic_percent: 25\n  keep_versions: 3\n",
        where="pipeline.yaml",
    )
    return step_context


def test_a_blessed_model_is_rolled_out_and_the_run_succeeds(ctx: StepContext) -> None:
    evaluation(ctx, "blessed_with_warnings")
    deployer = FakeDeployer()

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    assert deployer.calls == ROLLED_OUT
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "succeeded"
    outputs = run.steps["deploy"].outputs
    assert (outputs["version"], outputs["canary_percent"], outputs["promoted"]) == ("3", 25, True)
    assert outputs["retired"] == ["1"]
    assert outputs["canary"]["passed"] is True
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

    assert deployer.calls == [
        *ROLLED_OUT[:3],
        ("roll_back", (DATASET, "3", "canary failed: 20/20 requests failed")),
    ]
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

    assert deployer.calls == ROLLED_OUT


class Killed(BaseException):
    """The process dies (not an error the step runner sees: its claim is kept)."""


def test_a_rollout_killed_at_its_canary_check_resumes_without_deploying_again(
    ctx: StepContext, clock: Clock
) -> None:
    """The version was registered and given its canary share before the process died:
    the redelivery that takes the claim over checks, promotes and retires, and never
    registers or deploys the version twice."""
    evaluation(ctx, "blessed")
    deployer = FakeDeployer(check_fails=Killed())

    with pytest.raises(Killed):
        handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)
    assert deployer.calls == ROLLED_OUT[:3]
    clock.advance(ctx.claim_lease.total_seconds() + 1)  # no heartbeat: the lease expires

    handle_model_blessed(ctx, BLESSED, event_id="e2", deployer=deployer)

    assert deployer.calls == [*ROLLED_OUT[:3], *ROLLED_OUT[2:]]
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "succeeded"
    assert run.steps["deploy"].outputs["canary_percent"] == 25


def test_the_canary_is_checked_with_smoke_rows_of_the_runs_transform_spec(
    ctx: StepContext,
) -> None:
    evaluation(ctx, "blessed")
    spec = TransformSpec(
        dataset=DATASET,
        run_id=RUN_ID,
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
    ctx.artifacts.write_json(f"runs/{RUN_ID}/transform/transform.json", spec)
    deployer = FakeDeployer()

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    candidate = Candidate(
        dataset=DATASET,
        run_id=RUN_ID,
        model_uri=MODEL_URI,
        lineage={
            "run_id": RUN_ID,
            "data_snapshot": hashlib.sha256(b"").hexdigest()[:16],
            "snapshot_files": "0",
            "transform_fingerprint": spec.fingerprint(),
        },
    )
    rows = smoke_instances(spec)
    assert rows[0] == {"age": 41.5, "city": "paris", "key": "cascade-smoke-0"}
    assert deployer.calls == [
        ("register", (candidate, CONFIG)),
        ("start_canary", (candidate, VERSION, CONFIG)),
        ("check_canary", (DATASET, "3", rows, CONFIG)),
        *ROLLED_OUT[3:],
    ]


def test_the_deployed_version_carries_the_model_family_and_pinned_module(ctx: StepContext) -> None:
    module = "gs://cascade-artifacts/datasets/credit/models/wide.py#7"
    ctx.ledger.update(
        RUN_ID,
        lambda run: run.lineage.update(
            model="custom", model_module=module, model_module_sha256="ab" * 32
        ),
    )
    evaluation(ctx, "blessed_with_warnings")
    deployer = FakeDeployer()

    handle_model_blessed(ctx, BLESSED, event_id="e1", deployer=deployer)

    registered = deployer.calls[0][1][0]
    assert registered.lineage == {
        "run_id": RUN_ID,
        "model": "custom",
        "model_module": module,
        "model_module_sha256": "ab" * 32,
    }
