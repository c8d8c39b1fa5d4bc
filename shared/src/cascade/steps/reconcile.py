"""Reconciliation: find work that an event loss or a crash left unfinished, and resume it.

Delivery is at least once *while the transport keeps its messages*; an emulator restart,
a notification that failed to publish, or a topic deleted by mistake can still lose an
event. ``reconcile`` makes the system converge anyway, idempotently (claims make a
second run of any step a no-op):

- a landed object with no run record gets its validate step run now;
- a run still ``running`` whose record has not changed for ``stale_after`` is resumed
  from its last step: if that step finished, the messages it published (kept on its
  claim) are published again; if its owner died (expired claim) or it never started,
  the messages that triggered it — the previous step's — are published again, or for the
  first step, validate runs again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from cascade.core.claims import Claim
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.events import StorageObjectEvent
from cascade.core.messages import MESSAGE_TYPES, Alert
from cascade.core.runs import RunRecord, run_id_for_object
from cascade.steps.validate import dataset_of_object, handle_object_finalized

__all__ = ["ReconcileReport", "reconcile"]

StartUpload = Callable[[StepContext, StorageObjectEvent], object]


@dataclass
class ReconcileReport:
    objects_seen: int = 0
    runs_checked: int = 0
    uploads_started: list[str] = field(default_factory=list)
    runs_resumed: list[str] = field(default_factory=list)
    messages_republished: int = 0


def reconcile(
    ctx: StepContext,
    *,
    stale_after: timedelta,
    dataset: str | None = None,
    start_upload: StartUpload = handle_object_finalized,
) -> ReconcileReport:
    """Resume everything older than ``stale_after`` that has not finished."""
    report = ReconcileReport()
    _start_missing_runs(ctx, report, stale_after, dataset, start_upload)
    for run in _runs(ctx, dataset):
        report.runs_checked += 1
        if run.state == "running" and ctx.clock() - run.updated_at >= stale_after:
            _resume(ctx, run, report, start_upload)
    return report


def _start_missing_runs(
    ctx: StepContext,
    report: ReconcileReport,
    stale_after: timedelta,
    dataset: str | None,
    start_upload: StartUpload,
) -> None:
    landing = ctx.landing_store()
    now = ctx.clock()
    for info in landing.list_objects(f"{dataset}/" if dataset else ""):
        report.objects_seen += 1
        try:
            object_dataset = dataset_of_object(info.name)
        except BadRequestError:
            continue  # not a data file: validate alerted on it when it landed
        run_id = run_id_for_object(object_dataset, landing.bucket_name, info.name, info.generation)
        if info.updated is not None and now - info.updated < stale_after:
            continue  # its event may still be on its way
        if ctx.ledger.get(run_id) is None:
            start_upload(
                ctx, _event_for(landing.bucket_name, info.name, info.generation, info.size)
            )
            report.uploads_started.append(run_id)


def _event_for(bucket: str, name: str, generation: int, size: int) -> StorageObjectEvent:
    return StorageObjectEvent(
        event_id=f"reconcile:{generation}",
        bucket=bucket,
        name=name,
        generation=generation,
        size=size,
    )


def _runs(ctx: StepContext, dataset: str | None) -> Iterator[RunRecord]:
    prefix = f"runs/{dataset}-" if dataset else "runs/"
    for name in ctx.artifacts.list_names(prefix):
        if name.endswith("/run.json"):
            record = ctx.ledger.get(name.split("/")[1])
            if record is not None:
                yield record


def _resume(
    ctx: StepContext, run: RunRecord, report: ReconcileReport, start_upload: StartUpload
) -> None:
    steps = list(run.steps)
    if not steps:
        _restart_first_step(ctx, run, report, start_upload)
        return
    last = steps[-1]
    claim = ctx.claims.get(run.run_id, last)
    if claim is not None and claim.state == "done":
        republished = _republish(ctx, claim)
    elif claim is not None and claim.lease_expires_at > ctx.clock():
        return  # its owner is still working
    elif len(steps) > 1:
        previous = ctx.claims.get(run.run_id, steps[-2])
        republished = _republish(ctx, previous) if previous is not None else 0
    else:
        _restart_first_step(ctx, run, report, start_upload)
        return
    report.runs_resumed.append(run.run_id)
    report.messages_republished += republished


def _restart_first_step(
    ctx: StepContext, run: RunRecord, report: ReconcileReport, start_upload: StartUpload
) -> None:
    trigger = run.trigger
    if trigger.kind != "object" or trigger.generation is None:
        return  # a request's run starts at train; its message is the request itself
    landing = ctx.landing_store()
    name = trigger.uri.removeprefix(f"gs://{landing.bucket_name}/")
    for info in landing.list_objects(name):
        if info.name == name and info.generation == trigger.generation:
            start_upload(ctx, _event_for(landing.bucket_name, name, info.generation, info.size))
            report.runs_resumed.append(run.run_id)


def _republish(ctx: StepContext, claim: Claim) -> int:
    count = 0
    for published in claim.published:
        message_type = MESSAGE_TYPES.get(published.type)
        if message_type is None or message_type is Alert:
            continue  # alerts were delivered to people once; don't page twice
        ctx.bus.publish(message_type.model_validate(published.body))
        count += 1
    return count
