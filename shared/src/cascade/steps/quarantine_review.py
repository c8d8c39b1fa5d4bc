"""Quarantine review: a person releases or discards a file validation quarantined.

Audited like force-bless (``cascade.evaluation.override``). A review is allowed only for
a run that validation rejected and quarantined (``validate`` step ``rejected`` with a
``quarantine`` output), and only once: the review record
``datasets/<dataset>/quarantine_reviews/<run_id>.json`` is created, never overwritten,
so a second release or discard is refused (``CannotReviewError``: HTTP 409). It records
who (the actor named and, over HTTP, the identity the platform authenticated), why, when,
how (``cli`` or ``http``) and what was acknowledged; the quarantined run gets the same
record as the outputs of a ``review`` step, and a WARNING alert announces it. The run
itself stays ``rejected``.

``release`` re-validates the same bytes (the landed object at the quarantined generation
while it exists, else the quarantine copy) in a new run whose id Cascade derives
(``run_id_for_request(dataset, "release:<run_id>")``; the ``release:`` prefix is reserved,
so no caller can name it). The run's blocking (check, feature) findings are acknowledged:
graded ``warning`` for this file only; anything else the file shows now (the baseline
may have moved since) is judged as usual, so a release can be rejected again. Accepted,
the chain goes on as for any accepted file (``data-validated``, transform, training).
The new run's trigger records the release: ``request_id`` ``release:<run_id>`` and a
reason naming the actor and their words.

``discard`` deletes the quarantine copy of the data file and nothing else: the anomalies
stay next to it as evidence, and the landed object is left alone (the landing bucket
belongs to the producers, whose lifecycle rules expire it; the review function may only
read it). The review records what was deleted and what was kept.

Both are safe to call again after a crash: a repeated call finishes what the recorded
review started (every step is claimed, so nothing is done twice) and then answers 409.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.events import StorageObjectEvent
from cascade.core.messages import Alert, ObjectRef
from cascade.core.observability import RunLogger
from cascade.core.paths import DatasetPaths, check_run_id_name
from cascade.core.runs import RunRecord, Trigger, check_system_run_id, run_id_for_request
from cascade.core.validation_config import Check
from cascade.steps.runner import StepOutcome, execute_step
from cascade.steps.validate import validate_landed_object

__all__ = [
    "MAX_ACTOR_CHARS",
    "MAX_REVIEW_REASON_CHARS",
    "RELEASE_REQUEST_PREFIX",
    "AcknowledgedFinding",
    "CannotReviewError",
    "QuarantineReview",
    "QuarantinedRun",
    "Released",
    "UnknownRunError",
    "discard",
    "quarantined_run",
    "quarantined_runs",
    "read_review",
    "release",
    "release_run_id",
    "review_path",
]

STEP = "review"
VALIDATE = "validate"
RELEASE_REQUEST_PREFIX = "release:"
"""The request id of a release's run: ``release:<run_id>`` (reserved for Cascade)."""
MAX_REVIEW_REASON_CHARS = 2000
MIN_REVIEW_REASON_CHARS = 3
MAX_ACTOR_CHARS = 200
UNRELEASABLE_CHECKS = frozenset({Check.FEATURE_COUNT.value})
"""Findings a review cannot acknowledge: a too-wide file was never summarised (its
statistics would poison the baseline); raise ``validation.max_features`` instead."""


class UnknownRunError(BadRequestError):
    """No run has this id (HTTP 404)."""


class CannotReviewError(BadRequestError):
    """The run is not quarantined, or was reviewed already (HTTP 409)."""


class AcknowledgedFinding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check: str
    feature: str


class QuarantineReview(BaseModel):
    """The audit record of one review (``datasets/<d>/quarantine_reviews/<run>.json``)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    dataset: str
    action: Literal["release", "discard"]
    actor: str
    authenticated_as: str | None = None
    """The caller's identity as the platform authenticated it (HTTP)."""
    reason: str
    at: datetime
    via: str
    source: str
    """The landed object the run validated (``gs://bucket/name#generation``)."""
    quarantine: str
    acknowledged: list[AcknowledgedFinding] = []
    """release: the run's blocking findings, graded ``warning`` for this file only."""
    release_run_id: str | None = None
    read_from: str | None = None
    """release: the bytes re-validated (the landed generation, or the quarantine copy)."""
    deleted: list[str] = []
    """discard: what was deleted (the quarantine copy of the data file only)."""
    kept: list[str] = []
    """discard: what was left on purpose (the anomalies, the landed object)."""

    @property
    def done(self) -> str:
        """``released`` or ``discarded``."""
        return f"{self.action.removesuffix('e')}ed"


@dataclass(frozen=True)
class QuarantinedRun:
    """A run validation rejected and quarantined, with what a review needs of it."""

    run: RunRecord
    quarantine: str
    quarantine_copy: str
    source: ObjectRef
    errors: list[str]
    blocking: list[AcknowledgedFinding]

    @property
    def quarantined_at(self) -> datetime:
        step = self.run.validation
        assert step is not None  # a quarantined run was validated
        return step.finished_at or step.started_at


@dataclass(frozen=True)
class Released:
    """What a release did: its review, and the new run's record and state."""

    review: QuarantineReview
    run: RunRecord
    summary: str


def review_path(dataset: str, run_id: str) -> str:
    return f"{DatasetPaths(dataset).root}/quarantine_reviews/{check_run_id_name(run_id)}.json"


def release_run_id(dataset: str, run_id: str) -> str:
    return run_id_for_request(dataset, f"{RELEASE_REQUEST_PREFIX}{run_id}")


def read_review(ctx: StepContext, dataset: str, run_id: str) -> QuarantineReview | None:
    found = ctx.artifacts.read_model(review_path(dataset, run_id), QuarantineReview)
    return None if found is None else found[0]


def _as_quarantined(run: RunRecord) -> QuarantinedRun | None:
    step = run.validation
    if run.state != "rejected" or step is None or step.state != "rejected":
        return None
    quarantine = step.outputs.get("quarantine")
    uri, generation = run.trigger.uri, run.trigger.generation
    if not isinstance(quarantine, str) or not uri.startswith("gs://") or generation is None:
        return None
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    prefix = DatasetPaths(run.dataset).quarantine(run.run_id)
    blocking = [
        AcknowledgedFinding.model_validate(item) for item in step.outputs.get("blocking") or []
    ]
    return QuarantinedRun(
        run=run,
        quarantine=quarantine,
        quarantine_copy=f"{prefix}/{posixpath.basename(name)}",
        source=ObjectRef(bucket=bucket, name=name, generation=generation),
        errors=[str(error) for error in step.outputs.get("errors") or []],
        blocking=blocking,
    )


def quarantined_run(ctx: StepContext, run_id: str) -> QuarantinedRun:
    """The quarantined run ``run_id``; UnknownRunError or CannotReviewError if not one."""
    check_system_run_id(run_id)
    run = ctx.ledger.get(run_id)
    if run is None:
        raise UnknownRunError(f"no run {run_id}")
    found = _as_quarantined(run)
    if found is None:
        raise CannotReviewError(
            f"run {run_id} is {run.state}, not quarantined by validation: only a file "
            "validation rejected can be released or discarded"
        )
    return found


def quarantined_runs(ctx: StepContext, dataset: str | None = None) -> Iterator[QuarantinedRun]:
    """Every quarantined run (of ``dataset``), from the quarantine prefix."""
    prefix = f"quarantine/{DatasetPaths(dataset).dataset}/" if dataset else "quarantine/"
    seen: set[str] = set()
    for name in ctx.artifacts.list_names(prefix):
        parts = name.split("/")
        if len(parts) < 4 or parts[2] in seen:
            continue
        seen.add(parts[2])
        run = ctx.ledger.get(parts[2])
        found = None if run is None else _as_quarantined(run)
        if found is not None:
            yield found


def _checked_words(actor: str, reason: str) -> tuple[str, str]:
    actor, reason = actor.strip(), reason.strip()
    if not 1 <= len(actor) <= MAX_ACTOR_CHARS:
        raise BadRequestError(f"actor: 1 to {MAX_ACTOR_CHARS} characters")
    if not MIN_REVIEW_REASON_CHARS <= len(reason) <= MAX_REVIEW_REASON_CHARS:
        raise BadRequestError(
            f"reason: {MIN_REVIEW_REASON_CHARS} to {MAX_REVIEW_REASON_CHARS} characters "
            f"(got {len(reason)}): say why, it is recorded for audit"
        )
    return actor, reason


def _already(review: QuarantineReview) -> CannotReviewError:
    then = f"; its run is {review.release_run_id}" if review.release_run_id else ""
    return CannotReviewError(
        f"run {review.run_id} was already {review.done} by {review.actor} at "
        f"{review.at.isoformat()}{then}"
    )


def _create_review(ctx: StepContext, review: QuarantineReview) -> QuarantineReview:
    """Record ``review`` unless one exists; the one that stands."""
    path = review_path(review.dataset, review.run_id)
    if ctx.artifacts.create(path, review.model_dump_json(indent=2).encode()) is not None:
        return review
    found = read_review(ctx, review.dataset, review.run_id)
    if found is None:
        raise CannotReviewError(f"the review of run {review.run_id} changed meanwhile; try again")
    return found


# ------------------------------------------------------------------ release


def release(
    ctx: StepContext,
    run_id: str,
    *,
    actor: str,
    reason: str,
    via: str,
    authenticated_as: str | None = None,
) -> Released:
    """Release quarantined ``run_id``: re-validate its bytes with its findings acknowledged."""
    actor, reason = _checked_words(actor, reason)
    quarantined = quarantined_run(ctx, run_id)
    run = quarantined.run
    existing = read_review(ctx, run.dataset, run_id)
    if existing is not None:
        if existing.action == "release":
            _continue_release(ctx, quarantined, existing)  # finish what a crash left
        raise _already(existing)
    if not quarantined.blocking:
        raise CannotReviewError(
            f"run {run_id} records no blocking findings to acknowledge; upload the file again"
        )
    refused = [f for f in quarantined.blocking if f.check in UNRELEASABLE_CHECKS]
    if refused:
        raise CannotReviewError(
            f"run {run_id} was refused for {refused[0].check}: the file was never summarised "
            "and cannot be released; raise validation.max_features in the pipeline config "
            "and upload it again"
        )
    read_from = _bytes_to_read(ctx, quarantined)
    review = QuarantineReview(
        run_id=run_id,
        dataset=run.dataset,
        action="release",
        actor=actor,
        authenticated_as=authenticated_as,
        reason=reason,
        at=ctx.clock(),
        via=via,
        source=quarantined.source.uri,
        quarantine=quarantined.quarantine,
        acknowledged=quarantined.blocking,
        release_run_id=release_run_id(run.dataset, run_id),
        read_from=read_from.uri,
    )
    stands = _create_review(ctx, review)
    if stands is not review:
        if stands.action == "release":
            _continue_release(ctx, quarantined, stands)
        raise _already(stands)
    return _continue_release(ctx, quarantined, review)


def _bytes_to_read(ctx: StepContext, quarantined: QuarantinedRun) -> ObjectRef:
    """The landed generation while it exists, else the quarantine copy."""
    source = quarantined.source
    if ctx.store(source.bucket).stat(source.name, generation=source.generation) is not None:
        return source
    copy = ctx.artifacts.stat(quarantined.quarantine_copy)
    if copy is None:
        raise CannotReviewError(
            f"run {quarantined.run.run_id}: neither {source.uri} nor its quarantine copy "
            f"{ctx.artifacts.uri(quarantined.quarantine_copy)} exists; nothing to release"
        )
    return ObjectRef(
        bucket=ctx.artifacts.bucket_name,
        name=quarantined.quarantine_copy,
        generation=copy.generation,
    )


def _parse_ref(uri: str) -> ObjectRef:
    bucket, _, rest = uri.removeprefix("gs://").partition("/")
    name, _, generation = rest.rpartition("#")
    return ObjectRef(bucket=bucket, name=name, generation=int(generation))


def _continue_release(
    ctx: StepContext, quarantined: QuarantinedRun, review: QuarantineReview
) -> Released:
    """Record the review on the quarantined run, then validate the release's run."""
    assert review.release_run_id is not None
    assert review.read_from is not None
    run = quarantined.run
    _record_on_run(ctx, run, review)
    now = ctx.clock()
    release_run = RunRecord(
        run_id=review.release_run_id,
        dataset=run.dataset,
        trigger=Trigger(
            kind="request",
            uri=run.trigger.uri,
            generation=run.trigger.generation,
            request_id=f"{RELEASE_REQUEST_PREFIX}{run.run_id}",
            event_id=f"{RELEASE_REQUEST_PREFIX}{run.run_id}",
            reason=(f"release of quarantined run {run.run_id} by {review.actor}: {review.reason}")[
                :MAX_REVIEW_REASON_CHARS
            ],
        ),
        created_at=now,
        updated_at=now,
        lineage={
            "released_from": run.run_id,
            "quarantine_review": ctx.artifacts.uri(review_path(run.dataset, run.run_id)),
        },
    )
    source = quarantined.source
    event = StorageObjectEvent(
        event_id=f"{RELEASE_REQUEST_PREFIX}{run.run_id}",
        bucket=source.bucket,
        name=source.name,
        generation=source.generation,
        size=0,
    )
    acknowledged = frozenset((f.check, f.feature) for f in review.acknowledged)
    read_from = _parse_ref(review.read_from)

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        log.info(
            "release of %s by %s: acknowledging %s",
            run.run_id,
            review.actor,
            ", ".join(f"{check} in {feature or 'dataset'}" for check, feature in acknowledged),
        )
        return validate_landed_object(
            ctx, release_run, event, log, acknowledged=acknowledged, read_from=read_from
        )

    outcome = execute_step(
        ctx, run=release_run, step=VALIDATE, owner=release_run.trigger.event_id or "", body=body
    )
    stored = ctx.ledger.get(release_run.run_id) or release_run
    if outcome is not None:
        summary = outcome.summary
    else:
        step = stored.validation
        summary = f"validate already {step.state if step else 'done'}"
    return Released(review=review, run=stored, summary=summary)


# ------------------------------------------------------------------ discard


def discard(
    ctx: StepContext,
    run_id: str,
    *,
    actor: str,
    reason: str,
    via: str,
    authenticated_as: str | None = None,
) -> QuarantineReview:
    """Discard quarantined ``run_id``: record why, delete the quarantine copy of its file."""
    actor, reason = _checked_words(actor, reason)
    quarantined = quarantined_run(ctx, run_id)
    run = quarantined.run
    existing = read_review(ctx, run.dataset, run_id)
    if existing is not None:
        if existing.action == "discard":
            _finish_discard(ctx, quarantined, existing)
        raise _already(existing)
    review = QuarantineReview(
        run_id=run_id,
        dataset=run.dataset,
        action="discard",
        actor=actor,
        authenticated_as=authenticated_as,
        reason=reason,
        at=ctx.clock(),
        via=via,
        source=quarantined.source.uri,
        quarantine=quarantined.quarantine,
        deleted=[ctx.artifacts.uri(quarantined.quarantine_copy)],
        kept=[
            f"{quarantined.quarantine}/anomalies.pbtxt",
            f"gs://{quarantined.source.bucket}/{quarantined.source.name} (the landed object: "
            "the landing bucket is the producers'; its lifecycle rules expire it)",
        ],
    )
    stands = _create_review(ctx, review)
    if stands is not review:
        if stands.action == "discard":
            _finish_discard(ctx, quarantined, stands)
        raise _already(stands)
    _finish_discard(ctx, quarantined, review)
    return review


def _finish_discard(
    ctx: StepContext, quarantined: QuarantinedRun, review: QuarantineReview
) -> None:
    ctx.artifacts.delete(quarantined.quarantine_copy)  # False when a crash left it deleted
    _record_on_run(ctx, quarantined.run, review)


# ------------------------------------------------------------------ the audit on the run


def _record_on_run(ctx: StepContext, run: RunRecord, review: QuarantineReview) -> None:
    """The ``review`` step of the quarantined run: the audit record and a WARNING alert."""
    audit = review.model_dump(mode="json")
    done = f"{review.done} by {review.actor}"
    if review.action == "release":
        summary = f"{done}: re-validated as run {review.release_run_id}: {review.reason}"
    else:
        summary = f"{done}: the quarantine copy was deleted: {review.reason}"

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        alert = Alert(
            dataset=run.dataset,
            run_id=run.run_id,
            step=STEP,
            severity="WARNING",
            summary=f"quarantined {review.source} {summary}"[:MAX_REVIEW_REASON_CHARS],
            details={
                "action": review.action,
                "actor": review.actor,
                "authenticated_as": review.authenticated_as,
                "acknowledged": [f"{f.check} in {f.feature}" for f in review.acknowledged],
                "release_run_id": review.release_run_id,
                "review": ctx.artifacts.uri(review_path(run.dataset, run.run_id)),
            },
            at=ctx.clock(),
        )
        return StepOutcome(
            summary=summary,
            outputs={"review": audit},
            messages=[alert],
            lineage={"quarantine_review": audit},
        )

    execute_step(ctx, run=run, step=STEP, owner=f"review:{run.run_id}", body=body)
