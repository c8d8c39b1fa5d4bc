"""The run record: one ``runs/<run_id>/run.json`` per run, updated optimistically.

A run id is derived from what triggered the run (object + generation, or a request
id), so a redelivered event finds its own run instead of starting a new one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from cascade.core.errors import BadRequestError
from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore

__all__ = [
    "SYSTEM_RUN_ID_PATTERN",
    "RunLedger",
    "RunRecord",
    "StepRecord",
    "Trigger",
    "check_system_run_id",
    "run_id_for_object",
    "run_id_for_request",
]

RunState = Literal["running", "succeeded", "rejected", "failed"]
StepState = Literal["running", "succeeded", "rejected", "failed"]


SYSTEM_RUN_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}-r?[0-9a-f]{16}$")
"""The only run ids the system derives: ``<dataset>-<16 hex>`` (an upload) and
``<dataset>-r<16 hex>`` (a request), the dataset being a valid dataset name."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_system_run_id(run_id: str, dataset: str | None = None) -> str:
    """Return ``run_id`` if it has the form the system derives (of ``dataset``, when
    given), else raise BadRequestError. Run ids are never chosen by a caller."""
    shown = repr(run_id) if len(repr(run_id)) <= 100 else repr(run_id)[:97] + "..."
    if not SYSTEM_RUN_ID_PATTERN.fullmatch(run_id):
        raise BadRequestError(
            f"invalid run_id {shown}: run ids are derived by Cascade "
            "(<dataset>-<16 hex digits> or <dataset>-r<16 hex digits>)"
        )
    if dataset is not None and run_id.rsplit("-", 1)[0] != dataset:
        raise BadRequestError(f"run_id {shown} is not a run of dataset {dataset}")
    return run_id


def run_id_for_object(dataset: str, bucket: str, name: str, generation: int) -> str:
    """Run id of a landed object; the generation distinguishes overwrites."""
    return f"{dataset}-{_digest(f'gs://{bucket}/{name}#{generation}')}"


def run_id_for_request(dataset: str, request_id: str) -> str:
    """Run id of a train request; the same request id always maps to the same run."""
    return f"{dataset}-r{_digest(f'request:{dataset}:{request_id}')}"


class Trigger(BaseModel):
    kind: Literal["object", "request"]
    uri: str = ""
    generation: int | None = None
    request_id: str | None = None
    event_id: str | None = None
    reason: str = ""
    """Why a request asked for the run (a user's words, "scheduled retrain (...)")."""


class StepRecord(BaseModel):
    state: StepState
    attempts: int = 0
    started_at: datetime
    finished_at: datetime | None = None
    duration_s: float | None = None
    error: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)


VALIDATE_STEP = "validate"
VALIDATE_STATISTICS_STEP = "validate_statistics"
"""A file too big for a function: ``validate`` launches a Beam job and this step,
run when the job ends, judges its statistics (cascade.steps.validate_beam)."""


class RunRecord(BaseModel):
    run_id: str
    dataset: str
    trigger: Trigger
    state: RunState = "running"
    created_at: datetime
    updated_at: datetime
    steps: dict[str, StepRecord] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None

    @property
    def validation(self) -> StepRecord | None:
        """The step holding the file's validation outcome: ``validate_statistics`` when a
        Beam job computed the statistics (``validate`` then only launched it), else
        ``validate``; None before validation started."""
        return self.steps.get(VALIDATE_STATISTICS_STEP) or self.steps.get(VALIDATE_STEP)


class RunLedger:
    """Creates and updates run records with generation preconditions."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def get(self, run_id: str) -> RunRecord | None:
        found = self._store.read_model(RunPaths(run_id).record, RunRecord)
        return None if found is None else found[0]

    def ensure(self, record: RunRecord) -> RunRecord:
        """Create ``record`` unless the run exists; return the stored record."""
        path = RunPaths(record.run_id).record
        if self._store.create(path, record.model_dump_json(indent=2).encode()) is not None:
            return record
        existing = self.get(record.run_id)
        if existing is None:  # deleted between the two calls: try once more
            return self.ensure(record)
        return existing

    def update(self, run_id: str, mutate: Callable[[RunRecord], None]) -> RunRecord:
        """Apply ``mutate`` to the current record and write it back if nobody else did.

        ``mutate`` may run several times (once per lost race); it must only change the
        record it is given. KeyError when the run has no record; ConcurrentUpdateError
        after the store's ``update_attempts`` lost races.
        """

        def change(record: RunRecord | None) -> RunRecord:
            if record is None:
                raise KeyError(f"run {run_id} has no record")
            mutate(record)
            return record

        return self._store.update(RunPaths(run_id).record, RunRecord, change).value
