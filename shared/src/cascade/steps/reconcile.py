"""Reconciliation: find work that an event loss or a crash left unfinished, and resume it.

Delivery is at least once *while the transport keeps its messages*; an emulator restart,
a notification that failed to publish, or a topic deleted by mistake can still lose an
event. ``reconcile`` makes the system converge anyway, idempotently (claims make a
second run of any step a no-op):

- a landed object with no run record gets its validate step run now; one whose name
  validate refuses gets its (failed) run recorded the same way, under the
  ``INVALID_NAMES_DATASET`` pseudo-dataset, never under a dataset read from a cleaned
  name. A listed name that is only the cleaned form of a refused name that has a run
  (the local emulator keeps ``credit/../credit/a.csv`` as ``credit/a.csv``, same
  generation) is an alias, not an upload: no run is derived from it;
- a run still ``running`` whose record has not changed for ``stale_after`` is resumed
  from its last step: if that step finished, the messages it published (kept in its
  result) are published again; if its owner died (expired claim) or it never started,
  the messages that triggered it — the previous step's — are published again, or for the
  first step, validate runs again;
- a run waiting on the Beam statistics job of its validate step (a big file,
  ``cascade.steps.validate_beam``) has the job's state polled: a job that ended
  without its end reaching ``job-events`` finishes validate now (``finish_beam_job``,
  claimed like the event's own handling); likewise a run waiting on the Beam split job
  of its transform step (``cascade.steps.transform_beam``, ``finish_transform_job``);
- a dataset's training lock held by a run without a job whose train request was lost
  (``cascade.jobs.lost_request.lost_train_request``: its train step never started, or its
  owner died, ``lost_request_after`` — two claim leases — or ``stale_after`` if shorter,
  after the reservation) gets that request published again. Releasing the lock instead
  would drop the requests coalesced into that run;
- a dataset's transform history (pointers, coalescing decisions) is pruned of what no
  reader needs any more (``cascade.transform.history``), so that a stream's datasets do
  not gather one object of each per file for ever.

It runs on a schedule (``handle_reconcile_request``: the ``reconcile`` function, fed by
the topology's ``schedules.reconcile`` through Cloud Scheduler in the cloud and the local
cloud's scheduler on a laptop), and on demand (``cascade reconcile``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from cascade.core.claims import Claim
from cascade.core.context import StepContext
from cascade.core.events import PubSubEnvelope, StorageObjectEvent, decode_message
from cascade.core.messages import MESSAGE_TYPES, Alert, ReconcileRequest
from cascade.core.runs import RunRecord, run_id_for_object
from cascade.jobs.beam_records import BeamRunner
from cascade.jobs.lock import (
    ActiveRun,
    TrainingLock,
    TrainingLockStore,
    follow_up_request,
    mark_request_republished,
)
from cascade.jobs.lost_request import lost_request_after, lost_train_request
from cascade.steps.runner import StepOutcome
from cascade.steps.transform import SPLIT_STEP, finish_transform_job
from cascade.steps.validate import (
    BEAM_STEP,
    dataset_of_object,
    finish_beam_job,
    handle_object_finalized,
)
from cascade.transform.history import prunable_history
from cascade.validation.names import INVALID_NAMES_DATASET, normalised_alias

__all__ = ["ReconcileReport", "handle_reconcile_request", "reconcile"]

_log = logging.getLogger("cascade.reconcile")

StartUpload = Callable[[StepContext, StorageObjectEvent], object]


@dataclass
class ReconcileReport:
    objects_seen: int = 0
    runs_checked: int = 0
    """Runs still running (by their run.json) whose steps were looked at."""
    uploads_started: list[str] = field(default_factory=list)
    runs_resumed: list[str] = field(default_factory=list)
    messages_republished: int = 0
    aliases_skipped: list[str] = field(default_factory=list)
    """Listed names that are only the cleaned form of a refused name's object."""
    train_requests_republished: list[str] = field(default_factory=list)
    beam_jobs_polled: list[str] = field(default_factory=list)
    """Beam jobs (statistics, splits) of stalled runs whose state was asked for."""
    history_pruned: int = 0
    """Transform pointers and decisions deleted (``cascade.transform.history``)."""


def reconcile(
    ctx: StepContext,
    *,
    stale_after: timedelta,
    dataset: str | None = None,
    start_upload: StartUpload = handle_object_finalized,
    beam_runner: BeamRunner | None = None,
) -> ReconcileReport:
    """Resume everything older than ``stale_after`` that has not finished."""
    report = ReconcileReport()
    _start_missing_runs(ctx, report, stale_after, dataset, start_upload)
    for run in _runs(ctx, dataset):
        report.runs_checked += 1
        stalled = run.state == "running" and ctx.clock() - run.updated_at >= stale_after
        if not stalled or _poll_beam_job(ctx, run, report, beam_runner):
            continue
        _resume(ctx, run, report, start_upload)
    _sweep_datasets(ctx, report, stale_after, dataset)
    return report


def handle_reconcile_request(
    ctx: StepContext, attributes: dict[str, Any], data: Any
) -> ReconcileReport:
    """The ``reconcile`` function: one sweep per scheduled ``ReconcileRequest``.

    A bad request is a BadRequestError (acknowledged and alerted by the adapter, never
    retried); a sweep that fails half-way is simply done again by the next tick, so the
    topology gives this function no retries (two overlapping sweeps are harmless:
    every step they start or resume is claimed first).
    """
    envelope = PubSubEnvelope.from_cloudevent(attributes, data)
    request = decode_message(envelope, ReconcileRequest)
    report = reconcile(
        ctx, stale_after=timedelta(seconds=request.stale_after_s), dataset=request.dataset
    )
    _log.info(
        "reconciled: %d landed objects and %d runs checked; %d runs started, %d resumed, "
        "%d messages republished",
        report.objects_seen,
        report.runs_checked,
        len(report.uploads_started),
        len(report.runs_resumed),
        report.messages_republished,
        extra={"labels": {"event_id": envelope.event_id}, "json_fields": asdict(report)},
    )
    return report


def _sweep_datasets(
    ctx: StepContext, report: ReconcileReport, stale_after: timedelta, dataset: str | None
) -> None:
    """One listing of ``datasets/`` (or one dataset's folder): each dataset's lost train
    request is published again, and its transform history pruned."""
    prefix = f"datasets/{dataset}/" if dataset else "datasets/"
    per_dataset: defaultdict[str, list[str]] = defaultdict(list)
    for name in ctx.artifacts.list_names(prefix):
        parts = name.split("/", 2)
        if len(parts) == 3 and parts[1]:
            per_dataset[parts[1]].append(name)
    for name, names in per_dataset.items():
        if f"datasets/{name}/training_lock.json" in names:
            _republish_lost_train_request(ctx, report, stale_after, name)
        for pruned in prunable_history(names, name, ctx.clock()):
            if ctx.artifacts.delete(pruned):
                report.history_pruned += 1


def _republish_lost_train_request(
    ctx: StepContext, report: ReconcileReport, stale_after: timedelta, dataset: str
) -> None:
    after = min(stale_after, lost_request_after(ctx.settings))
    locks = TrainingLockStore(ctx.artifacts, dataset)
    current, _ = locks.read()
    if lost_train_request(ctx, current.active, after=after) is None:
        return
    assert current.active is not None
    holder = locks.update(partial(_mark_republished, ctx, current.active))
    if holder is None:
        return  # the lock changed meanwhile: the next reconcile looks again
    ctx.bus.publish(follow_up_request(locks.dataset, holder))
    report.train_requests_republished.append(holder.run_id)
    report.runs_resumed.append(holder.run_id)
    report.messages_republished += 1


def _mark_republished(ctx: StepContext, checked: ActiveRun, lock: TrainingLock) -> ActiveRun | None:
    return mark_request_republished(lock, checked, ctx.clock())


def _start_missing_runs(
    ctx: StepContext,
    report: ReconcileReport,
    stale_after: timedelta,
    dataset: str | None,
    start_upload: StartUpload,
) -> None:
    landing = ctx.landing_store()
    now = ctx.clock()
    aliases: set[tuple[str, int]] | None = None
    for info in landing.list_objects(f"{dataset}/" if dataset else ""):
        report.objects_seen += 1
        object_dataset = dataset_of_object(info.name)  # the pseudo-dataset if refused
        run_id = run_id_for_object(object_dataset, landing.bucket_name, info.name, info.generation)
        if info.updated is not None and now - info.updated < stale_after:
            continue  # its event may still be on its way
        if ctx.ledger.read_run_level(run_id) is not None:
            continue  # its run exists (one read: not its steps' objects)
        if aliases is None:
            aliases = _refused_name_aliases(ctx, landing.bucket_name)
        if (info.name, info.generation) in aliases:
            report.aliases_skipped.append(f"gs://{landing.bucket_name}/{info.name}")
            continue
        start_upload(ctx, _event_for(landing.bucket_name, info.name, info.generation, info.size))
        report.uploads_started.append(run_id)


def _refused_name_aliases(ctx: StepContext, bucket: str) -> set[tuple[str, int]]:
    """(cleaned name, generation) of every refused landed name that has a run."""
    prefix = f"gs://{bucket}/"
    aliases = set()
    for run in _run_levels(ctx, INVALID_NAMES_DATASET):  # finished runs too
        trigger = run.trigger
        if trigger.kind != "object" or trigger.generation is None:
            continue
        if not trigger.uri.startswith(prefix):
            continue
        alias = normalised_alias(trigger.uri.removeprefix(prefix))
        if alias is not None:
            aliases.add((alias, trigger.generation))
    return aliases


def _event_for(bucket: str, name: str, generation: int, size: int) -> StorageObjectEvent:
    return StorageObjectEvent(
        event_id=f"reconcile:{generation}",
        bucket=bucket,
        name=name,
        generation=generation,
        size=size,
    )


def _run_levels(ctx: StepContext, dataset: str | None) -> Iterator[RunRecord]:
    """Every run's run.json alone (trigger, state, error: one read each, not its steps)."""
    prefix = f"runs/{dataset}-" if dataset else "runs/"
    for name in ctx.artifacts.list_names(prefix):
        if name.endswith("/run.json"):
            stored = ctx.ledger.read_run_level(name.split("/")[1])
            if stored is not None:
                yield stored


def _runs(ctx: StepContext, dataset: str | None) -> Iterator[RunRecord]:
    """The runs whose run.json says ``running``, assembled with their steps. A finished
    run costs one read (run.json), not its steps' objects; a run whose last step ended
    it but whose run.json has not caught up is assembled, and shows its end."""
    for stored in _run_levels(ctx, dataset):
        if stored.state != "running":
            continue
        record = ctx.ledger.get(stored.run_id)
        if record is not None:
            yield record


def _poll_beam_job(
    ctx: StepContext, run: RunRecord, report: ReconcileReport, runner: BeamRunner | None
) -> bool:
    """A run waiting on a Beam job its last step launched (validate's statistics,
    transform's split): ask for the job's state and finish the step if it ended. False
    when the run is not waiting on one."""
    chain = [step for step in run.steps if step not in SIDE_STEPS]
    for launch, finish_step, finish in (
        ("validate", BEAM_STEP, finish_beam_job),
        ("transform", SPLIT_STEP, finish_transform_job),
    ):
        if chain[-1:] in ([launch], [finish_step]):
            return _poll_launched_job(ctx, run, report, runner, launch, finish_step, finish)
    return False


def _poll_launched_job(
    ctx: StepContext,
    run: RunRecord,
    report: ReconcileReport,
    runner: BeamRunner | None,
    launch: str,
    finish_step: str,
    finish: Callable[..., StepOutcome | None],
) -> bool:
    launched = ctx.claims.get(run.run_id, launch)
    if launched is None or launched.state != "done":
        return False
    job_id = launched.submitted.get("beam_job")
    if not job_id:
        return False
    finishing = ctx.claims.get(run.run_id, finish_step)
    if finishing is not None and finishing.state == "done":
        return False  # finished: its messages are republished like any step's
    if finishing is not None and finishing.lease_expires_at > ctx.clock():
        return True  # its owner is still working
    report.beam_jobs_polled.append(str(job_id))
    if finish(ctx, str(job_id), owner=f"reconcile:{job_id}", runner=runner):
        report.runs_resumed.append(run.run_id)
    return True


SIDE_STEPS = frozenset({"monitor"})
"""Steps that run beside the chain on the same message and never continue it."""


def _resume(
    ctx: StepContext, run: RunRecord, report: ReconcileReport, start_upload: StartUpload
) -> None:
    # A side step (the monitor, beside transform) is not the chain's progress: a run is
    # resumed from its last chain step, and a side step's own retries are its own.
    steps = [step for step in run.steps if step not in SIDE_STEPS]
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
