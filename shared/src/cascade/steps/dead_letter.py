"""dead-letters: record a message that exhausted its deliveries, fail its run, alert.

Pub/Sub forwards a message to the dead-letter topic after ``max_delivery_attempts``
failed deliveries, adding ``CloudPubSubDeadLetterSource*`` attributes. The message keeps
its own attributes, so a step message still names its run (``run_id``) and a storage
notification still names its object (``bucketId``/``objectId``/``objectGeneration``).
This step keeps the dead letter under ``dead-letters/<message id>.json`` (create-only:
a duplicate delivery does nothing more than make sure the letter is indexed), indexes it
for the alerts page's newest-first pages (``cascade.core.dead_letter_index``), marks a
still-running run failed with the reason (indexes the run as failed and announces its
end on ``run-ended``, for its report), and publishes an ERROR alert. The topic's review
subscription keeps the message for people and replay; nothing here re-delivers it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from cascade.core.context import StepContext
from cascade.core.dead_letter_index import index_dead_letter
from cascade.core.errors import BadRequestError
from cascade.core.events import PubSubEnvelope
from cascade.core.messages import Alert
from cascade.core.paths import check_dataset_name, dead_letter_record
from cascade.core.run_index import record_run_state
from cascade.core.runs import RunRecord, run_id_for_object
from cascade.steps.runner import ATTEMPT_ERROR_PREFIX, announce_end

__all__ = ["DeadLetter", "handle_dead_letter_data", "record_dead_letter"]

_log = logging.getLogger("cascade.steps.dead_letter")


class DeadLetter(BaseModel):
    """One dead-lettered message, as kept in the artifacts bucket."""

    message_id: str
    source_subscription: str
    delivery_attempts: int | None
    last_error: str
    message_type: str
    dataset: str | None
    run_id: str | None
    attributes: dict[str, str]
    data: str
    recorded_at: datetime

    def reason(self) -> str:
        attempts = "its" if self.delivery_attempts is None else str(self.delivery_attempts)
        error = f": {self.last_error}" if self.last_error else ""
        return (
            f"{self.message_type} message {self.message_id} was dead-lettered by "
            f"{self.source_subscription or 'its subscription'} after {attempts} delivery "
            f"attempts{error}"
        )


def handle_dead_letter_data(ctx: StepContext, attributes: dict[str, Any], data: Any) -> None:
    """The dead-letter topic's CloudEvent (functions-framework adapter's handle)."""
    record_dead_letter(ctx, PubSubEnvelope.from_cloudevent(attributes, data))


def record_dead_letter(ctx: StepContext, envelope: PubSubEnvelope) -> DeadLetter | None:
    """Keep, index, fail the run, alert; None when this dead letter was already recorded
    (then only its index entry is made sure of, by the time the record holds)."""
    letter = _describe(envelope, ctx.clock())
    path = dead_letter_record(letter.message_id)
    if ctx.artifacts.create(path, letter.model_dump_json(indent=2).encode()) is None:
        _log.info("dead letter %s already recorded", letter.message_id)
        _index_recorded(ctx, path)
        return None
    index_dead_letter(ctx.artifacts, letter.message_id, letter.recorded_at)
    if letter.run_id is not None:
        _fail_run(ctx, letter.run_id, letter)
    if letter.dataset is not None:
        ctx.bus.publish(
            Alert(
                dataset=letter.dataset,
                run_id=letter.run_id,
                step="dead-letter",
                severity="ERROR",
                summary=letter.reason(),
                details={
                    "record": ctx.artifacts.uri(path),
                    "subscription": letter.source_subscription,
                    "delivery_attempts": letter.delivery_attempts,
                },
                at=letter.recorded_at,
            )
        )
    _log.error(letter.reason(), extra={"labels": {"run_id": letter.run_id or ""}})
    return letter


def _index_recorded(ctx: StepContext, path: str) -> None:
    """Index the letter already kept at ``path`` (a redelivery: its first delivery may
    have died between the record and its entry), by the record's own time."""
    stored = ctx.artifacts.read(path)
    if stored is None:
        return
    try:
        kept = DeadLetter.model_validate_json(stored.data)
    except ValidationError:
        _log.warning("the dead letter kept at %s is unreadable: not indexed", path)
        return
    index_dead_letter(ctx.artifacts, kept.message_id, kept.recorded_at)


def _describe(envelope: PubSubEnvelope, now: datetime) -> DeadLetter:
    attributes = envelope.attributes
    if not envelope.message_id:
        raise BadRequestError(f"dead letter event {envelope.event_id} has no message id")
    count = attributes.get("CloudPubSubDeadLetterSourceDeliveryCount", "")
    dataset, run_id = _run_of(attributes)
    return DeadLetter(
        message_id=envelope.message_id,
        source_subscription=attributes.get("CloudPubSubDeadLetterSourceSubscription", ""),
        delivery_attempts=int(count) if count.isdigit() else None,
        last_error=attributes.get("cascade_last_error", ""),
        message_type=attributes.get("message_type")
        or attributes.get("eventType", "unknown").lower(),
        dataset=dataset,
        run_id=run_id,
        attributes=attributes,
        data=envelope.data.decode("utf-8", errors="replace")[:10_000],
        recorded_at=now,
    )


def _run_of(attributes: dict[str, str]) -> tuple[str | None, str | None]:
    """The dataset and run a message belongs to, from a step message's or a storage
    notification's attributes; (None, None) when they name neither validly."""
    try:
        if "run_id" in attributes:
            return check_dataset_name(attributes.get("dataset", "")), attributes["run_id"]
        object_name = attributes.get("objectId", "")
        generation = attributes.get("objectGeneration", "")
        if "/" in object_name and generation.isdigit():
            dataset = check_dataset_name(object_name.split("/", 1)[0])
            bucket = attributes.get("bucketId", "")
            return dataset, run_id_for_object(dataset, bucket, object_name, int(generation))
        if "dataset" in attributes:
            return check_dataset_name(attributes["dataset"]), None
    except BadRequestError:
        pass
    return None, None


def _last_attempt_errors(record: RunRecord) -> str:
    """What the running steps' last failed attempts recorded: on Google Cloud the dead
    letter itself carries no error, so the run record is where the cause is kept."""
    errors = [
        f"{name}: {step.error.removeprefix(ATTEMPT_ERROR_PREFIX)}"
        for name, step in record.steps.items()
        if step.state == "running" and step.error
    ]
    return f"; last attempt: {'; '.join(errors)}" if errors else ""


def _steps_in_progress(ctx: StepContext, record: RunRecord, now: datetime) -> list[str]:
    """The run's running steps whose claim is live: held, not given up, lease unexpired."""
    live = []
    for name, step in record.steps.items():
        if step.state != "running":
            continue
        claim = ctx.claims.get(record.run_id, name)
        if (
            claim is not None
            and claim.state == "in_progress"
            and not claim.released
            and claim.lease_expires_at > now
        ):
            live.append(name)
    return live


def _fail_run(ctx: StepContext, run_id: str, letter: DeadLetter) -> None:
    """Fail a still-running run: run.json's run-level fields only. Its steps without a
    result then read as failed with this error (``cascade.core.runs.assemble_run``)."""
    record = ctx.ledger.get(run_id)
    if record is None:
        _log.warning("dead letter %s names run %s, which has no record", letter.message_id, run_id)
        return
    if record.state != "running":
        return
    if live := _steps_in_progress(ctx, record, letter.recorded_at):
        # A copy of a message whose step another delivery is still working on (a live,
        # renewed claim: each attempt of this copy was answered "in progress"). The owner
        # ends the run one way or the other; if it dies, its lease lapses and reconcile
        # resumes the step. Failing the run now would fail a run that is about to succeed.
        _log.warning(
            "dead letter %s: run %s is not failed: its %s step is in progress under a live "
            "claim (the dead-lettered message was a duplicate of the one being handled)",
            letter.message_id,
            run_id,
            ", ".join(live),
        )
        return
    error = f"dead-lettered: {letter.reason()}{_last_attempt_errors(record)}"

    def mutate(stored: RunRecord) -> None:
        if stored.state != "running":
            return
        stored.state = "failed"
        stored.error = error
        stored.updated_at = letter.recorded_at
        for step in stored.steps.values():  # a record an earlier version wrote
            if step.state == "running":
                step.state = "failed"
                step.error = error
                step.finished_at = letter.recorded_at

    written = ctx.ledger.update(run_id, mutate)
    try:
        record_run_state(ctx.artifacts, written)  # the failed entry (create-only)
    except BadRequestError as error:  # a run id the system would not derive: not indexed
        _log.warning("run %s is not indexed as %s: %s", run_id, written.state, error)
    announce_end(ctx, written, _log)  # its report (the report function renders it)
