"""The run record, assembled from objects that are each written once or rarely.

``runs/<run_id>/run.json`` holds the run-level record: created once (create-only) when
the run starts, updated when a step ends the run and by rare human-paced writers (a
dead letter, a force-bless). Each step keeps its own objects beside it: its claim
(``claims/<step>.json``, ``cascade.core.claims``) while it works and its result
(``results/<step>.json``) once done. ``RunLedger.get`` reads them together into one
``RunRecord``; no object is written several times within a second by one step, which
Cloud Storage would refuse (about one mutation per second of one object name).

A run id is derived from what triggered the run (object + generation, or a request
id), so a redelivered event finds its own run instead of starting a new one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from cascade.core.claims import ATTEMPT_ERROR_PREFIX, Claim, StepResult
from cascade.core.errors import BadRequestError, ConcurrentUpdateError
from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore

__all__ = [
    "ATTEMPT_ERROR_PREFIX",
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
TRANSFORM_STEP = "transform"
TRANSFORM_SPLIT_STEP = "transform_split"
"""A snapshot too big for a function: ``transform`` launches a Beam split job and this
step, run when the job ends, finishes the transform (cascade.steps.transform_beam)."""


class RunRecord(BaseModel):
    run_id: str
    dataset: str
    trigger: Trigger
    state: RunState = "running"
    created_at: datetime
    updated_at: datetime
    steps: dict[str, StepRecord] = Field(default_factory=dict)
    """Assembled by ``RunLedger.get`` from the steps' claims and results; in run.json
    only in records written by earlier versions (used where a step has no objects)."""
    lineage: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    ends_recorded: list[str] = Field(default_factory=list)
    """In run.json: the steps whose results' ``run_state`` the run-level state has
    taken in (a result that ended the run and is not listed here is still to be)."""
    step_outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """In run.json: outputs added to a finished step afterwards (a force-bless),
    merged over its result's by ``RunLedger.get``."""

    @property
    def validation(self) -> StepRecord | None:
        """The step holding the file's validation outcome: ``validate_statistics`` when a
        Beam job computed the statistics (``validate`` then only launched it), else
        ``validate``; None before validation started."""
        return self.steps.get(VALIDATE_STATISTICS_STEP) or self.steps.get(VALIDATE_STEP)

    @property
    def transformation(self) -> StepRecord | None:
        """The step holding the transform's outcome (rows, features, the train request):
        ``transform_split`` when a Beam job wrote the split (``transform`` then only
        launched it), else ``transform``; None before the transform started."""
        return self.steps.get(TRANSFORM_SPLIT_STEP) or self.steps.get(TRANSFORM_STEP)


class RunLedger:
    """Creates run records and assembles them with their steps' claims and results."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def get(self, run_id: str) -> RunRecord | None:
        """The run as one record: run.json with a StepRecord per step (from its result,
        else its claim, else what an earlier version kept in run.json), steps in the
        order they started. Reads run.json, lists ``claims/`` and ``results/`` (never the
        whole run folder: models live there) and reads what they hold."""
        record = self.read_run_level(run_id)
        if record is None:
            return None
        paths = RunPaths(run_id)
        results: dict[str, StepResult] = {}
        claims: dict[str, Claim] = {}
        written: dict[str, int] = {}
        for step in self._listed_steps(f"{paths.root}/results/"):
            found_result = self._store.read_model(paths.result(step), StepResult)
            if found_result is not None:
                results[step], written[step] = found_result
        for step in self._listed_steps(f"{paths.root}/claims/"):
            if step in results:
                continue
            found_claim = self._store.read_model(paths.claim(step), Claim)
            if found_claim is not None:
                claims[step], written[step] = found_claim
        return assemble_run(record, claims, results, written)

    def read_run_level(self, run_id: str) -> RunRecord | None:
        """run.json alone: the run-level fields (and an earlier version's steps)."""
        found = self._store.read_model(RunPaths(run_id).record, RunRecord)
        return None if found is None else found[0]

    def ensure(self, record: RunRecord) -> RunRecord:
        """Create ``record``'s run.json unless the run exists (read first: a run is
        created once, redeliveries only read); return run.json as stored."""
        path = RunPaths(record.run_id).record
        for _ in range(3):
            existing = self.read_run_level(record.run_id)
            if existing is not None:
                return existing
            if self._store.create(path, record.model_dump_json(indent=2).encode()) is not None:
                return record
            # created by another delivery in between (or deleted again): read it
        raise ConcurrentUpdateError(f"{self._store.uri(path)} kept appearing and vanishing")

    def update(self, run_id: str, mutate: Callable[[RunRecord], None]) -> RunRecord:
        """Apply ``mutate`` to run.json and write it back if nobody else wrote meanwhile.

        ``mutate`` gets run.json alone and may change only the run-level fields
        (``state``, ``error``, ``updated_at``, ``ends_recorded``, ``lineage``,
        ``step_outputs``): steps live in their claims and results, and ``steps`` in
        run.json is only what an earlier version wrote. It may run several times (once
        per lost race); it must only change the record it is given. Returns run.json as
        written. KeyError when the run has no record; ConcurrentUpdateError after the
        store's ``update_attempts`` lost races.
        """

        def change(record: RunRecord | None) -> RunRecord:
            if record is None:
                raise KeyError(f"run {run_id} has no record")
            mutate(record)
            return record

        return self._store.update(RunPaths(run_id).record, RunRecord, change).value

    def _listed_steps(self, prefix: str) -> list[str]:
        steps = []
        for name in self._store.list_names(prefix):
            step = name.removeprefix(prefix)
            if "/" not in step and step.endswith(".json") and step != ".json":
                steps.append(step.removesuffix(".json"))
        return steps


def assemble_run(
    record: RunRecord,
    claims: dict[str, Claim],
    results: dict[str, StepResult],
    written: dict[str, int] | None = None,
) -> RunRecord:
    """``record`` (run.json) with its steps from their results and claims.

    A step with a result is final; with only a claim it is running (its error the last
    failed attempt's, once released) unless a claim of an earlier version says done, in
    which case run.json's own step stands. Lineage is run.json's merged with the
    results' in step order. The state is run.json's, or the ``run_state`` of a result
    that ended the run and is not in run.json's ``ends_recorded`` yet (a crash between
    a result and run.json's end write loses nothing). A run failed from outside (a dead
    letter: no recorded result failed it) fails its steps that have no result.
    """
    steps = dict(record.steps)
    for step, claim in claims.items():
        if claim.state != "done" or step not in steps:
            steps[step] = _running_step(claim)
    for step, result in results.items():
        steps[step] = _finished_step(result, record.step_outputs.get(step, {}))
    generations = written or {}

    def started(item: tuple[str, StepRecord]) -> tuple[datetime, datetime, int]:
        step, found = item
        return (found.started_at, found.finished_at or _NOT_FINISHED, generations.get(step, 0))

    ordered = dict(sorted(steps.items(), key=started))
    assembled = record.model_copy(update={"steps": ordered, "lineage": dict(record.lineage)})
    in_order = [results[step] for step in ordered if step in results]
    for result in in_order:
        assembled.lineage.update(result.lineage)
    _apply_pending_end(assembled, in_order)
    if record.state == "failed" and not any(
        results[step].run_state == "failed" for step in record.ends_recorded if step in results
    ):
        _fail_unfinished(assembled, claims, results)  # failed from outside: a dead letter
    times = [record.updated_at]
    times += [result.finished_at for result in results.values()]
    times += [claim.claimed_at for claim in claims.values()]
    assembled.updated_at = max(times)
    return assembled


_NOT_FINISHED = datetime.max.replace(tzinfo=UTC)


def _running_step(claim: Claim) -> StepRecord:
    error = None
    if claim.released:
        error = f"{ATTEMPT_ERROR_PREFIX}{claim.last_error or 'unknown error'}"
    return StepRecord(
        state="running", attempts=claim.attempts, started_at=claim.claimed_at, error=error
    )


def _finished_step(result: StepResult, amended: dict[str, Any]) -> StepRecord:
    return StepRecord(
        state=result.state,
        attempts=result.attempts,
        started_at=result.started_at,
        finished_at=result.finished_at,
        duration_s=result.duration_s,
        error=result.error,
        outputs={**result.outputs, **amended},
    )


def _apply_pending_end(assembled: RunRecord, in_order: list[StepResult]) -> None:
    """A result that ended the run but is not in run.json yet decides the state."""
    ending = [
        result
        for result in in_order
        if result.run_state is not None and result.step not in assembled.ends_recorded
    ]
    if not ending:
        return
    last = ending[-1]
    assert last.run_state is not None
    assembled.state = last.run_state
    assembled.ends_recorded = [*assembled.ends_recorded, last.step]
    if last.state != "succeeded":
        assembled.error = f"{last.step}: {last.summary}"


def _fail_unfinished(
    assembled: RunRecord, claims: dict[str, Claim], results: dict[str, StepResult]
) -> None:
    for step, claim in claims.items():
        if step in results or claim.state == "done":
            continue
        running = assembled.steps[step]
        running.state = "failed"
        running.error = assembled.error
        running.finished_at = assembled.updated_at
