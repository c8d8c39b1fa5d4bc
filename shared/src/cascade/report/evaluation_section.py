"""The evaluation section: every check with its tier and verdict, the candidate against
the production model, and the load-and-probe (infra) check.

Read from ``runs/<run_id>/evaluation.json`` (``EvaluationRecord``), the ``metrics.json``
it names (candidate and production metrics on the same eval split, overall and on the
newest files' rows) and the ``infra_check.json`` beside it (``InfraCheck``).
"""

from __future__ import annotations

from cascade.core.runs import RunRecord
from cascade.core.store import ArtifactStore
from cascade.evaluation.inputs import MetricValues
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.report.page_model import (
    CheckView,
    EvaluationSection,
    Fact,
    InfraView,
    MetricComparison,
)
from cascade.report.reading import Read, object_name, read_json
from cascade.report.training_section import TrainerMetrics, metrics_name
from cascade.trainer.infra_check import InfraCheck

__all__ = ["EVALUATION_STEP", "evaluation_section"]

EVALUATION_STEP = "evaluate"


def _not_evaluated(record: RunRecord) -> str:
    step = record.steps.get(EVALUATION_STEP)
    if step is not None:
        verdict = step.outputs.get("verdict")
        why = f" (verdict: {verdict})" if verdict else ""
        return f"The evaluate step {step.state}{why} without writing evaluation.json."
    if "train" not in record.steps:
        return "Evaluation did not run: no model was trained in this run."
    if record.state == "running":
        return "Evaluation has not run yet: the run is still in progress."
    return "Evaluation did not run: training did not produce a model."


def _rows(
    candidate_values: MetricValues | None, production_values: MetricValues | None
) -> list[MetricComparison]:
    candidate = candidate_values.metrics if candidate_values is not None else {}
    production = production_values.metrics if production_values is not None else {}
    return [
        MetricComparison(
            metric=name, candidate=candidate.get(name), production=production.get(name)
        )
        for name in sorted(
            set(candidate) | set(production), key=lambda name: (name != "loss", name)
        )
    ]


def _newest(metrics: TrainerMetrics) -> tuple[list[MetricComparison], str | None]:
    """Both models on the rows of the newest accepted files, when the trainer scored them."""
    candidate = metrics.candidate.newest_files
    if candidate is None:
        return [], None
    baseline = metrics.baseline.newest_files if metrics.baseline is not None else None
    files = ", ".join(metrics.newest_files) or "not named"
    note = f"{candidate.examples} eval rows from the newest accepted files: {files}."
    if metrics.baseline is not None and baseline is None:
        note += " The production model has no metrics on them."
    return _rows(candidate, baseline), note


def _comparison(metrics: TrainerMetrics) -> tuple[list[MetricComparison], str | None]:
    rows = _rows(
        metrics.candidate.overall, None if metrics.baseline is None else metrics.baseline.overall
    )
    note = None
    if metrics.baseline is None:
        note = metrics.baseline_error or "No production model was evaluated on this eval split."
    else:
        note = f"Production model: {metrics.baseline.model_uri}"
    return rows, note


def _infra(read: Read[InfraCheck]) -> InfraView | None:
    check = read.value
    if check is None:
        return InfraView(passed=False, note=read.problem)
    cases = [
        Fact(
            label=f"{case.name} ({case.rows} row{'s' if case.rows != 1 else ''})",
            value="pass" if case.passed else "fail: " + "; ".join(case.reasons),
        )
        for case in check.cases
    ]
    latency = [Fact(label="model load", value=f"{check.load_seconds:.2f} s")]
    if check.latency is not None:
        stats = check.latency
        latency += [
            Fact(label="single row p50", value=f"{stats.single_row_p50_ms:.2f} ms"),
            Fact(label="single row p95", value=f"{stats.single_row_p95_ms:.2f} ms"),
            Fact(label=f"batch of {stats.batch_rows} p50", value=f"{stats.batch_p50_ms:.2f} ms"),
        ]
    return InfraView(passed=check.passed, reasons=check.reasons, cases=cases, latency=latency)


def _override(record: EvaluationRecord) -> list[Fact]:
    override = record.override
    if override is None:
        return []
    return [
        Fact(label="force-blessed by", value=override.actor),
        Fact(label="reason", value=override.reason),
        Fact(label="at", value=override.at.isoformat()),
        Fact(label="via", value=override.via),
        Fact(label="verdict before", value=override.previous_verdict),
    ]


def evaluation_section(
    artifacts: ArtifactStore, record: RunRecord, evaluation: Read[EvaluationRecord]
) -> EvaluationSection:
    found = evaluation.value
    if found is None:
        return EvaluationSection(missing=_not_evaluated(record))
    section = EvaluationSection(
        verdict=found.verdict,
        summary=found.summary,
        first_run=found.first_run,
        first_run_policy=found.first_run_policy,
        production_model_uri=found.deployed_model_uri,
        newest_files=found.newest_files,
        checks=[
            CheckView.model_validate(check.model_dump(include=set(CheckView.model_fields)))
            for check in found.checks
        ],
        override=_override(found),
        artifacts=[
            Fact(label="evaluation", value=artifacts.uri(evaluation_path(record.run_id))),
            Fact(label="metrics", value=found.metrics_uri),
            Fact(label="infra check", value=found.infra_check_uri),
            Fact(label="model", value=found.model_uri),
        ],
    )
    metrics = read_json(artifacts, metrics_name(artifacts, record.run_id, found), TrainerMetrics)
    if metrics.value is None:
        section.comparison_note = f"No metrics to compare: {metrics.problem}."
    else:
        section.comparison, section.comparison_note = _comparison(metrics.value)
        section.newest_comparison, section.newest_note = _newest(metrics.value)
    infra_name = object_name(artifacts, found.infra_check_uri)
    section.infra = _infra(
        read_json(artifacts, infra_name, InfraCheck)
        if infra_name is not None
        else Read(None, f"{found.infra_check_uri} is outside the artifacts bucket")
    )
    return section
