"""A dataset's stored serving plan: ``models/<dataset>/serving-plan.json``.

The serving advisor's plan (``cascade.serving.plan``) for a dataset, with what it was
computed from (window, request log table, endpoint, key field) and when: a
``StoredServingPlan``, the newest one per dataset, beside its serving state.
``cascade serving-plan DATASET --save`` and ``cascade report RUN`` write it
(``serving_plan_compute``); the run report, built from artifacts only, reads it.

Light on purpose (no BigQuery client): the report's collecting imports it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord
from cascade.core.store import ArtifactStore
from cascade.report.deployment_section import DEPLOY_STEP
from cascade.serving.plan import ServingPlan
from cascade.serving.state import read_serving_state

__all__ = [
    "SERVING_PLAN_FILE",
    "StoredServingPlan",
    "format_bytes",
    "load_serving_plan",
    "save_serving_plan",
    "serving_plan_due",
    "serving_plan_path",
]

SERVING_PLAN_FILE = "serving-plan.json"


class StoredServingPlan(BaseModel):
    """``models/<dataset>/serving-plan.json``: the plan and what it was computed from."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    endpoint: str = Field(description="The request log's endpoint column value read.")
    table: str = Field(description="The request log table, project.dataset.table.")
    key_field: str = Field(description="The instances' key field counted.")
    start: datetime = Field(description="The window read: [start, end).")
    end: datetime
    computed_at: datetime
    unkeyed: int = Field(0, ge=0, description="Instances logged without the key field.")
    plan: ServingPlan


def serving_plan_path(dataset: str) -> str:
    """``models/<dataset>/serving-plan.json``: beside the serving state (``serving.json``),
    so the name is derived from it (``DatasetPaths`` validates the dataset name)."""
    folder, _, _ = DatasetPaths(dataset).serving.rpartition("/")
    return f"{folder}/{SERVING_PLAN_FILE}"


def save_serving_plan(artifacts: ArtifactStore, stored: StoredServingPlan) -> str:
    """Store ``stored`` as its dataset's newest plan (replacing the last one); its URI."""
    name = serving_plan_path(stored.dataset)
    artifacts.write_json(name, stored)
    return artifacts.uri(name)


def load_serving_plan(artifacts: ArtifactStore, dataset: str) -> StoredServingPlan | None:
    """The dataset's newest stored plan; None when there is none (a ValidationError when
    the object is not a plan: the report describes that instead, see its section)."""
    found = artifacts.read_model(serving_plan_path(dataset), StoredServingPlan)
    return None if found is None else found[0]


def format_bytes(value: int) -> str:
    """Decimal units (1.5 MB), as storage is billed; whole bytes below a kilobyte."""
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{value} B"


def serving_plan_due(artifacts: ArtifactStore, record: RunRecord) -> bool:
    """Whether a report of ``record`` should refresh the plan: the run deployed a model
    (its deploy step named a version), or a version of the dataset takes traffic. Only
    then is there an endpoint whose request log the plan reads."""
    deploy = record.steps.get(DEPLOY_STEP)
    if deploy is not None and deploy.outputs.get("version"):
        return True
    found = read_serving_state(artifacts, record.dataset)
    return found is not None and found[0].primary is not None
