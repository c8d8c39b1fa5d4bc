"""A run's artifacts as the steps write them, for the run report's tests.

Validation artifacts come from ``validate_file`` on real CSV text, serialised the way
the validate step stores them; training outputs from the trainer's models and the
evaluation tests' builders; ``evaluation.json`` and the deploy step's outputs from the
real evaluate and deploy steps (with a deployer that keeps ``serving.json`` as the
local one does).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from cascade.core.claims import StepResult
from cascade.core.context import StepContext
from cascade.core.deployment_config import DeploymentConfig
from cascade.core.job_spec import TrainingJobSpec
from cascade.core.messages import ModelBlessed
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.runs import RunRecord, StepRecord, Trigger
from cascade.core.store import ArtifactStore
from cascade.core.validation_config import Severities, Severity, ValidationConfig
from cascade.deploy.deployer import CanaryReport, Candidate
from cascade.jobs.records import job_spec_name
from cascade.report.validation_page import render_validation_page
from cascade.serving.state import DeployedVersion, ServingState, update_serving_state
from cascade.steps.deploy import handle_model_blessed
from cascade.steps.evaluate import handle_model_trained
from cascade.steps.validate import value_skews_of
from cascade.trainer.history import training_history
from cascade.validation.anomalies import Baseline
from cascade.validation.manifest import AcceptedFile
from cascade.validation.schema import schema_to_text
from cascade.validation.statistics import statistics_proto
from cascade.validation.validator import FileValidation, validate_file
from tests.unit.evaluation.builders import (
    DATASET,
    DEPLOYED_URI,
    MODEL_URI,
    NOW,
    RUN_ID,
    infra_check,
    metrics_report,
    model_metrics,
    model_trained,
    store_training_outputs,
)
from tests.unit.validation.builders import csv_source

__all__ = [
    "DATASET",
    "FIRST_RUN_ID",
    "PIPELINE_CONFIG",
    "REJECTED_RUN_ID",
    "RUN_ID",
    "SERVING_RUN_ID",
    "SKEWED_RUN_ID",
    "UNTRAINED_RUN_ID",
    "LocalCloudStandIn",
    "csv_text",
    "full_run",
    "land_first_file",
    "rejected_run",
    "skewed_run",
    "untrained_run",
]

FIRST_RUN_ID = "credit-00000000000000a1"
REJECTED_RUN_ID = "credit-00000000000000b2"
SKEWED_RUN_ID = "credit-00000000000000c3"
UNTRAINED_RUN_ID = "credit-00000000000000d4"
DRIFT_QUARANTINES = ValidationConfig(severities=Severities(drift=Severity.ERROR))
"""A dataset that keeps the old policy: drift quarantines (docs/validation.md, "Policy")."""
SERVING_RUN_ID = "credit-deployed"
LANDING = "cascade-landing"
PIPELINE_CONFIG = b"""
label: defaulted
problem_type: binary
evaluation:
  first_run: absolute_only
  thresholds:
    - {metric: auc, tier: blocking, lower_bound: 0.70}
    - {metric: loss, tier: warning, max_regression: 0.05, relative: true}
"""
HISTORY = {
    "loss": [0.69, 0.52, 0.45, 0.43],
    "val_loss": [0.66, 0.50, 0.46, 0.47],
    "auc": [0.61, 0.74, 0.80, 0.82],
    "val_auc": [0.63, 0.76, 0.81, 0.81],
}


def csv_text(
    seed: int, *, rows: int = 600, shift: float = 0.0, city: tuple[str, ...] = ("a", "b")
) -> str:
    generator = random.Random(seed)
    lines = ["amount,age,city"]
    for _ in range(rows):
        amount = generator.gauss(100 + shift, 10)
        lines.append(f"{amount:.3f},{generator.randint(20, 60)},{generator.choice(city)}")
    return "\n".join(lines) + "\n"


def _validate(
    tmp_path: Path,
    text: str,
    name: str,
    *,
    schema: Any,
    baseline: Baseline | None,
    run_id: str,
    config: ValidationConfig | None = None,
) -> FileValidation:
    return validate_file(
        csv_source(tmp_path, text, name),
        schema=schema,
        baseline=baseline,
        config=config or ValidationConfig(),
    )


def _store_validation(
    artifacts: ArtifactStore, run_id: str, validation: FileValidation, source: str
) -> dict[str, Any]:
    """What the validate step writes under ``runs/<run_id>/validation/``; its outputs."""
    folder = RunPaths(run_id).step_dir("validation")
    files = {
        "statistics": ("stats.pb", validation.statistics.SerializeToString()),
        "anomalies": (
            "anomalies.pbtxt",
            text_format.MessageToString(validation.result.anomalies).encode(),
        ),
        "schema": ("schema.pbtxt", schema_to_text(validation.schema).encode()),
        "report": (
            "report.html",
            render_validation_page(validation, run_id=run_id, config=ValidationConfig()).encode(),
        ),
    }
    outputs: dict[str, Any] = {"source": source}
    for key, (file, data) in files.items():
        artifacts.write(f"{folder}/{file}", data)
        outputs[key] = artifacts.uri(f"{folder}/{file}")
    outputs["errors"] = [str(finding) for finding in validation.result.errors]
    outputs["warnings"] = [str(finding) for finding in validation.result.warnings]
    outputs["value_skews"] = [
        skew.model_dump(mode="json") for skew in value_skews_of(validation.result)
    ]
    return outputs


def _step(
    state: str, minutes: float, duration_s: float, *, base: datetime = NOW, **fields: Any
) -> StepRecord:
    started = base + timedelta(minutes=minutes)
    return StepRecord.model_validate(
        {
            "state": state,
            "attempts": 1,
            "started_at": started,
            "finished_at": started + timedelta(seconds=duration_s),
            "duration_s": duration_s,
            **fields,
        }
    )


def _store_result(artifacts: ArtifactStore, run_id: str, name: str, step: StepRecord) -> None:
    """A finished step's result, as ``execute_step`` creates it."""
    assert step.finished_at is not None
    assert step.duration_s is not None
    result = StepResult(
        run_id=run_id,
        step=name,
        owner=f"{name}-event",
        state=step.state,  # type: ignore[arg-type]
        outputs=step.outputs,
        started_at=step.started_at,
        finished_at=step.finished_at,
        duration_s=step.duration_s,
        attempts=step.attempts,
    )
    assert artifacts.create(RunPaths(run_id).result(name), result.model_dump_json().encode())


def land_first_file(artifacts: ArtifactStore, tmp_path: Path) -> FileValidation:
    """The dataset's first file, accepted an hour before NOW: manifest and baseline."""
    validation = _validate(
        tmp_path, csv_text(1), "day-1.csv", schema=None, baseline=None, run_id=FIRST_RUN_ID
    )
    outputs = _store_validation(
        artifacts, FIRST_RUN_ID, validation, f"gs://{LANDING}/credit/day-1.csv"
    )
    paths = DatasetPaths(DATASET)
    manifest = AcceptedFile(
        file_id=FIRST_RUN_ID,
        run_id=FIRST_RUN_ID,
        uri=f"gs://{LANDING}/credit/day-1.csv",
        generation=1,
        num_examples=validation.summary.num_examples,
        stats_uri=outputs["statistics"],
        schema_uri=f"{artifacts.uri(paths.schema)}#1",
        accepted_at=NOW - timedelta(hours=1),
    )
    artifacts.write_json(paths.accepted_manifest(FIRST_RUN_ID), manifest)
    artifacts.write(paths.schema, schema_to_text(validation.schema).encode())
    baseline = statistics_proto(validation.summary, ValidationConfig(), name="baseline")
    artifacts.write(paths.baseline_stats, baseline.SerializeToString())
    artifacts.write(paths.pipeline_config, PIPELINE_CONFIG)
    return validation


def _run_record(
    run_id: str, name: str, state: str, steps: dict[str, StepRecord], **fields: Any
) -> RunRecord:
    return RunRecord.model_validate(
        {
            "run_id": run_id,
            "dataset": DATASET,
            "trigger": Trigger(kind="object", uri=f"gs://{LANDING}/credit/{name}", generation=7),
            "state": state,
            "created_at": NOW,
            "updated_at": NOW + timedelta(minutes=1),
            "steps": steps,
            **fields,
        }
    )


def rejected_run(
    artifacts: ArtifactStore, tmp_path: Path, *, city: tuple[str, ...] = ("a", "b")
) -> FileValidation:
    """A second file whose ``amount`` moved by three standard deviations, in a dataset
    whose config quarantines drift (``severities: {drift: error}``): rejected."""
    first = land_first_file(artifacts, tmp_path)
    validation = _validate(
        tmp_path,
        csv_text(2, shift=30.0, city=city),
        "day-2.csv",
        schema=first.schema,
        baseline=Baseline(first.summary, files=1),
        run_id=REJECTED_RUN_ID,
        config=DRIFT_QUARANTINES,
    )
    assert not validation.accepted
    source = f"gs://{LANDING}/credit/day-2.csv"
    outputs = _store_validation(artifacts, REJECTED_RUN_ID, validation, source)
    outputs["quarantine"] = artifacts.uri(DatasetPaths(DATASET).quarantine(REJECTED_RUN_ID))
    errors = outputs["errors"]
    summary = f"rejected {source}: {len(errors)} blocking anomalies: " + "; ".join(errors[:3])
    record = _run_record(
        REJECTED_RUN_ID,
        "day-2.csv",
        "rejected",
        {"validate": _step("rejected", 0, 1.25, outputs=outputs)},
        error=f"validate: {summary}",
    )
    artifacts.write_json(RunPaths(REJECTED_RUN_ID).record, record)
    return validation


def skewed_run(artifacts: ArtifactStore, tmp_path: Path) -> FileValidation:
    """A second file whose ``amount`` moved by two standard deviations, under the default
    policy: accepted with a value skew, transformed, on its way to training."""
    first = land_first_file(artifacts, tmp_path)
    validation = _validate(
        tmp_path,
        csv_text(2, shift=20.0),
        "day-2.csv",
        schema=first.schema,
        baseline=Baseline(first.summary, files=1),
        run_id=SKEWED_RUN_ID,
    )
    assert validation.accepted
    assert validation.result.value_skews
    source = f"gs://{LANDING}/credit/day-2.csv"
    outputs = _store_validation(artifacts, SKEWED_RUN_ID, validation, source)
    reason = "value skew in credit/day-2.csv: drift in 'amount'; transform t of 2 file(s)"
    steps = {
        "validate": _step("succeeded", 0, 1.25, outputs=outputs),
        "transform": _step("succeeded", 1, 2.0, outputs={"train_reason": reason}),
    }
    artifacts.write_json(
        RunPaths(SKEWED_RUN_ID).record, _run_record(SKEWED_RUN_ID, "day-2.csv", "running", steps)
    )
    return validation


def untrained_run(artifacts: ArtifactStore, tmp_path: Path) -> None:
    """A plain second file under ``training.retrain_on: value_skew`` with a model
    serving: accepted and transformed, and the run ended without asking for training."""
    first = land_first_file(artifacts, tmp_path)
    validation = _validate(
        tmp_path,
        csv_text(2),
        "day-2.csv",
        schema=first.schema,
        baseline=Baseline(first.summary, files=1),
        run_id=UNTRAINED_RUN_ID,
    )
    assert validation.accepted
    outputs = _store_validation(artifacts, UNTRAINED_RUN_ID, validation, "gs://l/credit/day-2.csv")
    why = (
        "no train request: training.retrain_on is value_skew and credit/day-2.csv brought "
        "no value skew"
    )
    steps = {
        "validate": _step("succeeded", 0, 1.0, outputs=outputs),
        "transform": _step("succeeded", 1, 2.0, outputs={"train_request": why}),
    }
    artifacts.write_json(
        RunPaths(UNTRAINED_RUN_ID).record,
        _run_record(UNTRAINED_RUN_ID, "day-2.csv", "succeeded", steps),
    )


class ServingStateDeployer:
    """A deployer that keeps ``serving.json`` as the local one does; the canary passes."""

    target = "local"

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    def register(self, candidate: Candidate, config: DeploymentConfig) -> DeployedVersion:
        def add(state: ServingState | None) -> ServingState:
            assert state is not None
            version = DeployedVersion(
                version=state.next_version(),
                run_id=candidate.run_id,
                model_uri=candidate.model_uri,
                state="standby",
                deployed_at=NOW,
            )
            state.versions.append(version)
            state.record(NOW, "deploy", version.version)
            return state

        updated = update_serving_state(self.artifacts, candidate.dataset, add)
        return updated.versions[-1]

    def _set(
        self,
        dataset: str,
        action: Any,
        version: str,
        traffic: dict[str, int],
        states: dict[str, Any],
        detail: str = "",
    ) -> None:
        def change(state: ServingState | None) -> ServingState:
            assert state is not None
            for item in state.versions:
                item.state = states.get(item.version, item.state)
            state.traffic = traffic
            state.record(NOW, action, version, detail)
            return state

        update_serving_state(self.artifacts, dataset, change)

    def start_canary(
        self, candidate: Candidate, version: DeployedVersion, config: DeploymentConfig
    ) -> int:
        share = config.canary_traffic_percent
        self._set(
            candidate.dataset,
            "canary",
            version.version,
            {"1": 100 - share, version.version: share},
            {version.version: "canary"},
            f"{share}%",
        )
        return share

    def check_canary(
        self, dataset: str, version: str, instances: list[dict[str, Any]], config: DeploymentConfig
    ) -> CanaryReport:
        return CanaryReport(
            True, 20, 0, 1.5, "20 requests answered, p95 1.5 ms", answered_by_canary=4
        )

    def promote(self, dataset: str, version: str) -> None:
        self._set(dataset, "promote", version, {version: 100}, {version: "serving", "1": "standby"})

    def roll_back(self, dataset: str, version: str, reason: str) -> None:
        self._set(
            dataset,
            "rollback",
            version,
            {"1": 100},
            {version: "rolled_back", "1": "serving"},
            reason,
        )

    def retire(self, dataset: str, keep: int) -> list[str]:
        return []

    def restore_previous(self, dataset: str) -> tuple[str, str]:
        raise AssertionError("not part of a rollout")


def _serving_before(artifacts: ArtifactStore) -> None:
    """Version 1 (an earlier run) serves all traffic."""
    state = ServingState(
        dataset=DATASET,
        target="local",
        endpoint=DATASET,
        versions=[
            DeployedVersion(
                version="1",
                run_id=SERVING_RUN_ID,
                model_uri=DEPLOYED_URI,
                state="serving",
                deployed_at=NOW - timedelta(days=1),
            )
        ],
        traffic={"1": 100},
        updated_at=NOW - timedelta(days=1),
    )
    state.record(NOW - timedelta(days=1), "promote", "1")
    artifacts.write_json(DatasetPaths(DATASET).serving, state)


NEWEST_FILE = "gs://cascade-landing/credit/day-3.csv#7"
"""The newest accepted file: the candidate and production are also compared on its rows."""


def _training_outputs(artifacts: ArtifactStore) -> None:
    training = RunPaths(RUN_ID).step_dir("training")
    spec = TrainingJobSpec(
        run_id=RUN_ID,
        dataset=DATASET,
        display_name=f"cascade-train-{RUN_ID}",
        transform_spec_uri=artifacts.uri(f"runs/{RUN_ID}/transform/transform.json"),
        output_dir=artifacts.uri(training),
        epochs=10,
        batch_size=256,
        baseline_model_uri=DEPLOYED_URI,
    )
    artifacts.write_json(job_spec_name(RUN_ID), spec)
    report = metrics_report(
        {
            **model_metrics(MODEL_URI, {"auc": 0.83, "loss": 0.41, "accuracy": 0.79}),
            "newest_files": {"examples": 120, "metrics": {"loss": 0.38, "auc": 0.84}},
        },
        {
            **model_metrics(DEPLOYED_URI, {"auc": 0.80, "loss": 0.45, "accuracy": 0.77}),
            "newest_files": {"examples": 120, "metrics": {"loss": 0.52, "auc": 0.74}},
        },
        epochs_trained=4,
        newest_files=[NEWEST_FILE],
        model_family="network",
        model_selection={"network": {"loss": 0.41}, "boosted_trees": {"loss": 0.43}},
    )
    store_training_outputs(artifacts, report, infra_check())
    artifacts.write_json(f"{training}/history.json", training_history(RUN_ID, HISTORY))


def full_run(ctx: StepContext, tmp_path: Path) -> None:
    """An upload accepted, transformed, trained, evaluated (real step) and deployed
    (real step): version 2 of the dataset's model serves 100%."""
    artifacts = ctx.artifacts
    first = land_first_file(artifacts, tmp_path)
    validation = _validate(
        tmp_path,
        csv_text(3),
        "day-3.csv",
        schema=first.schema,
        baseline=Baseline(first.summary, files=1),
        run_id=RUN_ID,
    )
    assert validation.accepted
    outputs = _store_validation(artifacts, RUN_ID, validation, f"gs://{LANDING}/credit/day-3.csv")
    job = "projects/p/locations/us-central1/customJobs/123"
    base = ctx.clock() - timedelta(minutes=10)  # before the real evaluate and deploy steps
    steps = {
        "validate": _step("succeeded", 0, 1.5, base=base, outputs=outputs),
        "transform": _step(
            "succeeded", 1, 2.25, base=base, outputs={"train_rows": 480, "eval_rows": 120}
        ),
        "train": _step("succeeded", 2, 0.5, base=base, outputs={"job_name": job, "kind": "custom"}),
        "training_job": _step(
            "succeeded", 3, 0.2, base=base, outputs={"job_name": job, "job_state": "succeeded"}
        ),
    }
    ctx.ledger.ensure(_run_record(RUN_ID, "day-3.csv", "running", {}))
    for name, step in steps.items():
        _store_result(artifacts, RUN_ID, name, step)
    _serving_before(artifacts)
    _training_outputs(artifacts)
    handle_model_trained(ctx, model_trained(), event_id="trained-1")
    blessed = ModelBlessed(dataset=DATASET, run_id=RUN_ID, model_uri=MODEL_URI)
    handle_model_blessed(
        ctx, blessed, event_id="blessed-1", deployer=ServingStateDeployer(artifacts)
    )


class LocalCloudStandIn:
    """What ``cascade report`` uses of ``LocalCloudClient``: its artifacts store."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    def __call__(self, settings: Any) -> LocalCloudStandIn:
        return self
