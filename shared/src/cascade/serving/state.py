"""``models/<dataset>/serving.json``: which model versions serve a dataset, and their traffic.

Written by the deployers (local and Vertex AI) with generation preconditions, read by the
local model server (which loads every deployed version and routes by ``traffic``), by the
train step (the deployed model is the baseline a candidate is compared with) and by
``cascade rollback``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.core.paths import DatasetPaths
from cascade.core.serving_config import ServingMode
from cascade.core.settings import DATASET_NAME_PATTERN
from cascade.core.store import ArtifactStore

__all__ = [
    "DEPLOYED_STATES",
    "DeployedVersion",
    "ServingAction",
    "ServingEvent",
    "ServingState",
    "VersionState",
    "deployed_model_uri",
    "read_serving_state",
    "record_serving_mode",
    "serving_states",
    "update_serving_state",
]

VersionState = Literal["canary", "serving", "standby", "rolled_back", "retired"]
ServingAction = Literal["deploy", "canary", "promote", "rollback", "retire"]
DEPLOYED_STATES: frozenset[str] = frozenset({"canary", "serving", "standby"})
"""Versions in these states are deployed (loaded by the model server, on the endpoint)."""
HISTORY_LIMIT = 100


class DeployedVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[0-9]+$", description="1, 2, ... (Vertex: model version id)")
    run_id: str
    model_uri: str
    state: VersionState
    deployed_at: datetime
    lineage: dict[str, str] = Field(default_factory=dict)
    vertex_model: str | None = Field(None, description="Model resource name with @version.")
    vertex_deployed_model_id: str | None = None

    @property
    def deployed(self) -> bool:
        return self.state in DEPLOYED_STATES


class ServingEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime
    action: ServingAction
    version: str
    detail: str = ""
    actor: str = Field("", description="Who asked (a person's rollback or promotion).")
    reason: str = Field("", description="Why they asked.")


class ServingState(BaseModel):
    """A dataset's deployed versions and traffic split (percent per version, sums to 100)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    target: Literal["local", "vertex"]
    endpoint: str = Field(description="Local: the model name; Vertex AI: the endpoint name.")
    versions: list[DeployedVersion] = Field(default_factory=list)
    traffic: dict[str, int] = Field(default_factory=dict)
    updated_at: datetime
    history: list[ServingEvent] = Field(default_factory=list)
    mode: ServingMode = Field(
        "dynamic",
        description="How the model server answers (the pipeline config's serving.mode, "
        "recorded by the deploy step); files written before modes existed are dynamic.",
    )

    @model_validator(mode="after")
    def _traffic_is_a_split_of_deployed_versions(self) -> ServingState:
        deployed = {version.version for version in self.versions if version.deployed}
        unknown = set(self.traffic) - deployed
        if unknown:
            raise ValueError(f"traffic names versions that are not deployed: {sorted(unknown)}")
        if self.traffic and sum(self.traffic.values()) != 100:
            raise ValueError(f"traffic must sum to 100, not {sum(self.traffic.values())}")
        if any(share < 0 for share in self.traffic.values()):
            raise ValueError("traffic shares must not be negative")
        return self

    def version(self, version: str) -> DeployedVersion | None:
        return next((item for item in self.versions if item.version == version), None)

    @property
    def deployed(self) -> list[DeployedVersion]:
        return [item for item in self.versions if item.deployed]

    @property
    def primary(self) -> DeployedVersion | None:
        """The version with the most traffic (the newest on a tie): the production model."""
        candidates = [item for item in self.deployed if self.traffic.get(item.version, 0) > 0]
        if not candidates:
            return None
        return max(candidates, key=lambda item: (self.traffic[item.version], int(item.version)))

    def next_version(self) -> str:
        return str(max((int(item.version) for item in self.versions), default=0) + 1)

    def record(
        self,
        at: datetime,
        action: ServingAction,
        version: str,
        detail: str = "",
        *,
        actor: str = "",
        reason: str = "",
    ) -> None:
        self.history.append(
            ServingEvent(
                at=at, action=action, version=version, detail=detail, actor=actor, reason=reason
            )
        )
        del self.history[:-HISTORY_LIMIT]
        self.updated_at = at


def read_serving_state(artifacts: ArtifactStore, dataset: str) -> tuple[ServingState, int] | None:
    """The dataset's serving state and its generation; None when nothing was ever deployed."""
    return artifacts.read_model(DatasetPaths(dataset).serving, ServingState)


def deployed_model_uri(artifacts: ArtifactStore, dataset: str) -> str | None:
    """The model serving most of the dataset's traffic (the baseline for the next candidate)."""
    found = read_serving_state(artifacts, dataset)
    primary = None if found is None else found[0].primary
    return None if primary is None else primary.model_uri


def update_serving_state(
    artifacts: ArtifactStore,
    dataset: str,
    mutate: Callable[[ServingState | None], ServingState],
) -> ServingState:
    """Read-modify-write ``serving.json`` under a generation precondition.

    ``mutate`` gets the current state (None before the first deployment) and returns the
    new one; it may run several times (once per lost race) and must not have side effects.
    """

    def change(current: ServingState | None) -> ServingState:
        updated = mutate(current)
        ServingState.model_validate(updated.model_dump())  # the split must still be valid
        return updated

    return artifacts.update(DatasetPaths(dataset).serving, ServingState, change).value


def record_serving_mode(artifacts: ArtifactStore, dataset: str, mode: ServingMode) -> bool:
    """Record the dataset's serving mode in ``serving.json`` (the deploy step, from the
    pipeline config). Nothing is written when nothing is deployed yet or the mode is
    already recorded; True when the file changed."""

    def change(current: ServingState | None) -> ServingState | None:
        if current is None or current.mode == mode:
            return None
        return current.model_copy(update={"mode": mode})

    return artifacts.update(DatasetPaths(dataset).serving, ServingState, change).written


def serving_states(artifacts: ArtifactStore) -> Iterator[tuple[str, ServingState]]:
    """(dataset, serving state) of every dataset with a ``models/<dataset>/serving.json``
    (a deeper object named so, or one deleted since it was listed, is skipped)."""
    prefix, suffix = "models/", "/serving.json"
    for name in artifacts.list_names(prefix):
        if not name.endswith(suffix):
            continue
        dataset = name[len(prefix) : -len(suffix)]
        if not DATASET_NAME_PATTERN.fullmatch(dataset):
            continue
        found = artifacts.read_model(name, ServingState)
        if found is not None:
            yield dataset, found[0]
