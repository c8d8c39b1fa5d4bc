"""A console with a local deployer over an in-memory bucket, and deployed model versions
(serving.json written by the deployers' own traffic code, evaluation and transform
records as the steps leave them)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from unittest.mock import create_autospec

import requests

from cascade.console import Caller, ConsoleConfig, create_app
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.run_index import StoreLister
from cascade.core.runs import RunRecord
from cascade.deploy import traffic
from cascade.deploy.deployer import lineage_of
from cascade.deploy.local_deployer import LocalDeployer
from cascade.evaluation.policy import CheckResult
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.serving.state import DeployedVersion, ServingState, update_serving_state
from cascade.transform.catalog import transform_spec_name
from cascade.transform.spec import (
    LabelSpec,
    NumericTransform,
    SnapshotFile,
    SplitSpec,
    TransformSpec,
)
from tests.console.builders import LOCAL_USER, T0, ConsoleUnderTest

MODEL_SERVER = "http://127.0.0.1:8501"


class ModelsConsole(ConsoleUnderTest):
    session: requests.Session
    """The local deployer's HTTP session (spec'd): it asks the model server to reload."""


def models_console(
    page_size: int = 25, tensorboard: Callable[[str], str] | None = None
) -> ModelsConsole:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    bus = RecordingBus()
    session = create_autospec(requests.Session, instance=True)
    deployer = LocalDeployer(
        artifacts, MODEL_SERVER, clock=lambda: T0 + timedelta(hours=1), session=session
    )
    config = ConsoleConfig(
        artifacts=artifacts,
        lister=StoreLister(artifacts),
        bus=lambda: bus,
        caller_of=lambda request: Caller(LOCAL_USER),
        page_size=page_size,
        poll_ms=500,
        deployer=lambda: deployer,
        tensorboard=tensorboard,
    )
    console = ModelsConsole(artifacts, bus, create_app(config))
    console.session = session
    return console


def evaluation(
    run: RunRecord, verdict: str = "blessed", *, infra_passed: bool = True, auc: float = 0.91
) -> EvaluationRecord:
    infra = CheckResult(
        name="model loads and answers",
        kind="infra",
        tier="blocking",
        verdict="pass" if infra_passed else "fail",
    )
    auc_check = CheckResult(
        name="auc >= 0.8 (overall)",
        kind="absolute",
        tier="blocking",
        verdict="fail" if verdict == "not_blessed" else "pass",
        metric="auc",
        value=auc,
        baseline_value=0.88,
        threshold=0.8,
    )
    return EvaluationRecord(
        dataset=run.dataset,
        run_id=run.run_id,
        model_uri=f"gs://cascade-artifacts/runs/{run.run_id}/training/model",
        metrics_uri=f"gs://cascade-artifacts/runs/{run.run_id}/training/metrics.json",
        infra_check_uri=f"gs://cascade-artifacts/runs/{run.run_id}/evaluate/infra_check.json",
        verdict=verdict,
        first_run=False,
        first_run_policy="absolute_only",
        checks=[infra, auc_check],
        summary=f"{verdict}: 2 check(s)",
        evaluated_at=run.created_at + timedelta(minutes=3),
    )


def transform_spec(run: RunRecord, files: list[str]) -> TransformSpec:
    return TransformSpec(
        dataset=run.dataset,
        run_id=run.run_id,
        label=LabelSpec(name="defaulted", problem_type="binary", classes=["no", "yes"]),
        features=[NumericTransform(name="age", mean=41.5, std=9.0, fill_value=41.5)],
        split=SplitSpec(),
        snapshot=[
            SnapshotFile(uri=f"gs://landing/{name}", generation=number + 1, rows=100)
            for number, name in enumerate(files)
        ],
        train_files=[],
        eval_files=[],
        train_rows=80 * len(files),
        eval_rows=20 * len(files),
        created_at=run.created_at + timedelta(minutes=1),
    )


def deploy(console: ConsoleUnderTest, run: RunRecord, files: list[str], share: int = 100) -> str:
    """The run's model as a new version with ``share`` of the traffic (100: promoted),
    written by the deployers' traffic code; its evaluation and transform spec stored."""
    spec = transform_spec(run, files)
    console.artifacts.write_json(transform_spec_name(run.run_id), spec)
    if console.artifacts.stat(evaluation_path(run.run_id)) is None:
        console.artifacts.write_json(evaluation_path(run.run_id), evaluation(run))
    added: list[str] = []
    at = run.created_at + timedelta(minutes=5)

    def mutate(state: ServingState | None) -> ServingState:
        if state is None:
            state = ServingState(
                dataset=run.dataset, target="local", endpoint=run.dataset, updated_at=at
            )
        entry = DeployedVersion(
            version=state.next_version(),
            run_id=run.run_id,
            model_uri=f"gs://cascade-artifacts/runs/{run.run_id}/training/model",
            state="standby",
            deployed_at=at,
            lineage=lineage_of(run.run_id, spec),
        )
        version = traffic.add_version(state, entry).version
        traffic.start_canary(state, version, share, at)
        if share == 100:
            traffic.promote(state, version, at)
        added[:] = [version]
        return state

    update_serving_state(console.artifacts, run.dataset, mutate)
    return added[0]
