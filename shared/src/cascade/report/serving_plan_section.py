"""The serving plan section: the dataset's newest stored plan, its tables and its plot.

The plan is ``models/<dataset>/serving-plan.json`` as it is when the report is built
(``cascade serving-plan DATASET --save`` or ``cascade report`` wrote it): the dataset's
newest, which may postdate the run, and the page says when and over which window it was
computed. Without one the section says how to get one. Every string in the stored plan
(dataset, endpoint, reason, labels) is data: the page and the plot escape it.
"""

from __future__ import annotations

from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord
from cascade.core.store import ArtifactStore
from cascade.report.page_model import CoverageView, Fact, ModeCostView, ServingPlanSection
from cascade.report.reading import read_json
from cascade.report.serving_plan import StoredServingPlan, serving_plan_path
from cascade.report.serving_plan_chart import render_svg
from cascade.serving.plan import ServingPlan
from cascade.serving.state import ServingState

__all__ = ["serving_plan_section"]


def _how_to(dataset: str, problem: str | None) -> str:
    return (
        f"No serving plan for {dataset} ({problem}). Compute and store one from the "
        f"request log with `cascade serving-plan {dataset} --save`; `cascade report` "
        "refreshes it when the dataset has a deployed model."
    )


def _serving_mode(artifacts: ArtifactStore, dataset: str) -> str | None:
    """How the dataset is served now (``serving.json``'s mode); None when not deployed
    or unreadable (the deployment section reports that)."""
    state = read_json(artifacts, DatasetPaths(dataset).serving, ServingState).value
    return None if state is None else state.mode


def _costs(plan: ServingPlan) -> list[ModeCostView]:
    return [
        ModeCostView(
            mode=cost.mode,
            recommended=cost.mode == plan.mode,
            precomputed_keys=cost.precomputed_keys,
            storage_bytes=cost.storage_bytes,
            model_share=cost.model_share,
            model_calls_per_s=cost.model_calls_per_s,
            cpu_cores=cost.cpu_cores,
            mean_latency_ms=cost.mean_latency_ms,
            p50_latency_ms=cost.p50_latency_ms,
        )
        for cost in plan.costs
    ]


def _section(stored: StoredServingPlan, uri: str, serving_mode: str | None) -> ServingPlanSection:
    plan = stored.plan
    return ServingPlanSection(
        uri=uri,
        mode=plan.mode,
        reason=plan.reason,
        serving_mode=serving_mode,
        computed_at=stored.computed_at,
        start=stored.start,
        end=stored.end,
        source=[
            Fact(label="dataset", value=stored.dataset),
            Fact(label="endpoint", value=stored.endpoint),
            Fact(label="request log", value=stored.table),
            Fact(label="key field", value=stored.key_field),
        ],
        requests=plan.requests,
        unkeyed=stored.unkeyed,
        requests_per_s=plan.requests_per_s,
        distinct_keys=plan.distinct_keys,
        cardinality=plan.cardinality,
        cardinality_source=plan.cardinality_source,
        head_keys=plan.head_keys,
        head_share=plan.head_share,
        assumptions=", ".join(f"{name}={value}" for name, value in vars(plan.assumptions).items()),
        peakedness=[
            CoverageView(label=item.label, keys=item.keys, share=item.share)
            for item in plan.peakedness
        ],
        costs=_costs(plan),
        plot_svg=render_svg(plan, stored.dataset),
    )


def serving_plan_section(
    artifacts: ArtifactStore, record: RunRecord, *, note: str | None = None
) -> ServingPlanSection:
    """The dataset's newest stored plan; ``note``: why this report could not refresh it."""
    name = serving_plan_path(record.dataset)
    read = read_json(artifacts, name, StoredServingPlan)
    if read.value is None:
        return ServingPlanSection(missing=_how_to(record.dataset, read.problem), note=note)
    section = _section(read.value, artifacts.uri(name), _serving_mode(artifacts, record.dataset))
    section.note = note
    return section
