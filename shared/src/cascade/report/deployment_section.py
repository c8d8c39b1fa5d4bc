"""The deployment section: this run's rollout, and what serves the dataset now.

The rollout (version, canary share and its smoke check, promoted or rolled back,
versions retired) is the deploy step's outputs in the run record. Versions, traffic
split and the serving history are ``models/<dataset>/serving.json`` as it is when the
report is built: later runs may have changed it, and the report says so.
"""

from __future__ import annotations

from typing import Any

from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord
from cascade.core.store import ArtifactStore
from cascade.evaluation.record import EvaluationRecord
from cascade.report.charts import SvgChart, stacked_bar_chart
from cascade.report.page_model import DeploymentSection, Fact, ServingEventView, VersionView
from cascade.report.reading import read_json
from cascade.serving.state import ServingState

__all__ = ["DEPLOY_STEP", "deployment_section"]

DEPLOY_STEP = "deploy"
_TRAFFIC_COLOURS = 4


_ROLLOUT_LABELS = {
    "target": "target",
    "version": "version",
    "canary_percent": "canary share (%)",
    "promoted": "promoted to 100%",
}
_CANARY_LABELS = {
    "passed": "canary check passed",
    "requests": "canary smoke requests",
    "errors": "canary errors",
    "p95_ms": "canary p95 latency (ms)",
    "answered_by_canary": "requests answered by the canary",
    "detail": "canary detail",
}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _rollout(outputs: dict[str, Any]) -> list[Fact]:
    facts = [
        Fact(label=label, value=_text(outputs[key]))
        for key, label in _ROLLOUT_LABELS.items()
        if key in outputs
    ]
    canary = outputs.get("canary")
    if isinstance(canary, dict):
        facts += [
            Fact(label=label, value=_text(canary[key]))
            for key, label in _CANARY_LABELS.items()
            if key in canary
        ]
    retired = outputs.get("retired")
    if retired:
        facts.append(Fact(label="retired versions", value=", ".join(str(v) for v in retired)))
    return facts


def _not_deployed(record: RunRecord, evaluation: EvaluationRecord | None) -> str:
    if evaluation is not None and not evaluation.blessed:
        return f"Nothing was deployed from this run: the candidate is {evaluation.verdict}."
    if record.state == "running":
        return "Nothing deployed yet: the run is still in progress."
    if evaluation is None:
        return "Nothing was deployed from this run: no candidate was evaluated."
    return "Nothing was deployed from this run."


def _traffic_chart(state: ServingState) -> SvgChart | None:
    shares = [(version, share) for version, share in state.traffic.items() if share > 0]
    if not shares:
        return None
    parts = [
        (f"v{version} {share}%", float(share), f"traffic-{index % _TRAFFIC_COLOURS}")
        for index, (version, share) in enumerate(sorted(shares, key=lambda item: int(item[0])))
    ]
    return stacked_bar_chart(parts, description="traffic split between deployed versions")


def _this_run_version(record: RunRecord, state: ServingState | None) -> str | None:
    step = record.steps.get(DEPLOY_STEP)
    if step is not None and step.outputs.get("version"):
        return str(step.outputs["version"])
    if state is None:
        return None
    mine = [version for version in state.versions if version.run_id == record.run_id]
    return max(mine, key=lambda version: int(version.version)).version if mine else None


def deployment_section(
    artifacts: ArtifactStore, record: RunRecord, evaluation: EvaluationRecord | None
) -> DeploymentSection:
    step = record.steps.get(DEPLOY_STEP)
    serving = read_json(artifacts, DatasetPaths(record.dataset).serving, ServingState)
    state = serving.value
    if step is None and state is None:
        return DeploymentSection(
            missing=f"{_not_deployed(record, evaluation)} The dataset has no serving state: "
            f"{serving.problem}."
        )
    version = _this_run_version(record, state)
    section = DeploymentSection(
        rollout=_rollout(step.outputs) if step is not None else [],
        rollout_note=None if step is not None else _not_deployed(record, evaluation),
        this_run_version=version,
    )
    if step is not None and step.error:
        section.rollout_note = f"The deploy step failed: {step.error}"
    if state is None:
        section.serving_missing = f"No serving state: {serving.problem}."
        return section
    section.target, section.endpoint, section.updated_at = (
        state.target,
        state.endpoint,
        state.updated_at,
    )
    section.versions = [
        VersionView(
            version=item.version,
            run_id=item.run_id,
            state=item.state,
            traffic=state.traffic.get(item.version, 0),
            deployed_at=item.deployed_at,
            model_uri=item.model_uri,
            this_run=item.run_id == record.run_id,
        )
        for item in sorted(state.versions, key=lambda item: -int(item.version))
    ]
    section.traffic_chart = _traffic_chart(state)
    section.history = [
        ServingEventView(
            at=event.at,
            action=event.action,
            version=event.version,
            detail=event.detail,
            this_run=event.version == version,
        )
        for event in reversed(state.history)
    ]
    return section
