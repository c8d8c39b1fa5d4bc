"""Reading one run's artifacts into a ``RunReport``.

The run record (``runs/<run_id>/run.json``) says which steps ran; each section reads
its own artifacts (see the ``*_section`` modules) and says plainly when they do not
exist. Only a run without a record is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cascade.core.context import utc_now
from cascade.core.errors import BadRequestError
from cascade.core.runs import RunLedger, RunRecord, StepRecord, Trigger
from cascade.core.store import ArtifactStore
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.report.deployment_section import DEPLOY_STEP, deployment_section
from cascade.report.evaluation_section import evaluation_section
from cascade.report.monitoring_section import monitoring_section
from cascade.report.page_model import (
    DeploymentSection,
    EvaluationSection,
    Fact,
    RunReport,
    RunSummary,
    StepView,
    ValidationSection,
)
from cascade.report.reading import read_json
from cascade.report.serving_plan_section import serving_plan_section
from cascade.report.training_section import training_section
from cascade.report.validation_section import validation_section

__all__ = ["RunNotFoundError", "collect_run_report"]

_MAX_OUTPUT_CHARS = 300
_MAX_LIST_ITEMS = 5


class RunNotFoundError(BadRequestError):
    """The run has no record in the artifacts bucket."""


def _trigger(trigger: Trigger) -> str:
    if trigger.kind == "object":
        return f"upload of {trigger.uri} (generation {trigger.generation})"
    return f"train request {trigger.request_id or '(no id)'}"


def _output_text(value: Any) -> str:
    if isinstance(value, list):
        shown = [str(item) for item in value[:_MAX_LIST_ITEMS]]
        more = len(value) - len(shown)
        text = "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")
    elif isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text if len(text) <= _MAX_OUTPUT_CHARS else text[: _MAX_OUTPUT_CHARS - 1] + "…"


def _step_view(name: str, step: StepRecord) -> StepView:
    return StepView(
        name=name,
        state=step.state,
        attempts=step.attempts,
        started_at=step.started_at,
        finished_at=step.finished_at,
        duration_s=step.duration_s,
        error=step.error,
        outputs=[
            Fact(label=key, value=_output_text(value))
            for key, value in step.outputs.items()
            if value not in (None, "", [], {})
        ],
    )


def _verdicts(
    record: RunRecord,
    validation: ValidationSection,
    evaluation: EvaluationSection,
    deployment: DeploymentSection,
) -> list[Fact]:
    verdicts = []
    if validation.missing is None:
        counts = f"{validation.errors} error(s), {validation.warnings} warning(s)"
        verdicts.append(Fact(label="data", value=f"{validation.verdict} ({counts})"))
    if evaluation.missing is None:
        verdicts.append(Fact(label="model", value=evaluation.verdict))
    deploy = record.steps.get(DEPLOY_STEP)
    if deploy is not None and "promoted" in deploy.outputs:
        outcome = "promoted" if deploy.outputs["promoted"] is True else "rolled back"
        verdicts.append(
            Fact(label="deployment", value=f"version {deployment.this_run_version} {outcome}")
        )
    return verdicts


def _summary(
    record: RunRecord,
    validation: ValidationSection,
    evaluation: EvaluationSection,
    deployment: DeploymentSection,
) -> RunSummary:
    return RunSummary(
        state=record.state,
        trigger=_trigger(record.trigger),
        created_at=record.created_at,
        updated_at=record.updated_at,
        error=record.error,
        steps=[_step_view(name, step) for name, step in record.steps.items()],
        model_version=deployment.this_run_version if DEPLOY_STEP in record.steps else None,
        verdicts=_verdicts(record, validation, evaluation, deployment),
        lineage=[
            Fact(label=key, value=_output_text(value))
            for key, value in record.lineage.items()
            if value not in (None, "")
        ],
    )


def collect_run_report(
    artifacts: ArtifactStore,
    run_id: str,
    *,
    clock: Callable[[], datetime] = utc_now,
    serving_plan_note: str | None = None,
) -> RunReport:
    """Everything the report shows about ``run_id``; RunNotFoundError without a record.

    ``serving_plan_note``: why the caller could not refresh the dataset's serving plan
    (``cascade report`` tries before it renders); the section shows it above the plan.
    """
    record = RunLedger(artifacts).get(run_id)
    if record is None:
        raise RunNotFoundError(f"no run {run_id} in {artifacts.uri('runs/')}")
    evaluation_read = read_json(artifacts, evaluation_path(run_id), EvaluationRecord)
    evaluation = evaluation_read.value
    validation_view = validation_section(artifacts, record)
    evaluation_view = evaluation_section(artifacts, record, evaluation_read)
    deployment_view = deployment_section(artifacts, record, evaluation)
    return RunReport(
        run_id=record.run_id,
        dataset=record.dataset,
        generated_at=clock(),
        summary=_summary(record, validation_view, evaluation_view, deployment_view),
        validation=validation_view,
        training=training_section(artifacts, record, evaluation),
        evaluation=evaluation_view,
        deployment=deployment_view,
        monitoring=monitoring_section(artifacts, record),
        serving_plan=serving_plan_section(artifacts, record, note=serving_plan_note),
    )
