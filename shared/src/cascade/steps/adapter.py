"""The edge between functions-framework and the steps.

A function's ``main.py`` hands its CloudEvent or HTTP request here with the step to
call. This module builds the StepContext lazily once per instance, drops stale events,
decodes the message, and maps errors: permanent ones are logged, alerted and
acknowledged (2xx); transient ones propagate, so the trigger redelivers with backoff.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any, Protocol, TypeVar

import flask
from pydantic import ValidationError

from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, PermanentError, StaleEventError, TransientError
from cascade.core.events import PubSubEnvelope, check_event_age, decode_message
from cascade.core.messages import Alert, StepMessage, TrainRequest
from cascade.core.observability import configure_logging
from cascade.core.settings import load_settings
from cascade.steps.runner import StepOutcome

__all__ = ["context", "run_cloudevent", "run_http_train_request", "run_pubsub_event"]

_log = logging.getLogger("cascade.functions")
MessageT = TypeVar("MessageT", bound=StepMessage)


class CloudEventLike(Protocol):
    data: Any

    def get_attributes(self) -> Any: ...


@cache
def context() -> StepContext:
    """This instance's StepContext, created on first use (not at import time)."""
    settings = load_settings()
    configure_logging(function_name=settings.function_name, project=settings.project)
    return StepContext.from_settings(settings)


def run_cloudevent(
    event: CloudEventLike, handle: Callable[[StepContext, dict[str, Any], Any], object]
) -> None:
    """Call ``handle(ctx, attributes, data)``; acknowledge permanent errors."""
    ctx = context()
    attributes = dict(event.get_attributes())
    try:
        check_event_age(attributes, ctx.clock(), ctx.settings.max_event_age_s)
        handle(ctx, attributes, event.data)
    except StaleEventError as error:
        _log.warning(str(error), extra={"labels": {"event_id": str(attributes.get("id"))}})
    except PermanentError as error:
        _acknowledge_permanent(ctx, error, attributes)


def run_pubsub_event(
    event: CloudEventLike,
    model: type[MessageT],
    handle: Callable[..., StepOutcome | None],
) -> None:
    """Decode a messagePublished event as ``model`` and call ``handle(ctx, message, event_id=)``."""

    def decode_and_handle(ctx: StepContext, attributes: dict[str, Any], data: Any) -> None:
        envelope = PubSubEnvelope.from_cloudevent(attributes, data)
        handle(ctx, decode_message(envelope, model), event_id=envelope.event_id)

    run_cloudevent(event, decode_and_handle)


def run_http_train_request(
    request: flask.Request, handle: Callable[..., StepOutcome | None]
) -> tuple[dict[str, Any], int]:
    """POST /: a JSON TrainRequest; ``request_id`` defaults to a new uuid.

    Authentication is Cloud Run's IAM invoker check in the cloud (no public invoker).
    Returns a JSON body and status: 200 with the run id, 400 naming the bad field,
    503 when a retry may succeed.
    """
    if request.method != "POST":
        return {"error": "use POST with a JSON body"}, 405
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return {"error": "the body must be a JSON object"}, 400
    body.setdefault("request_id", str(uuid.uuid4()))
    try:
        train_request = TrainRequest.model_validate(body)
    except (ValidationError, BadRequestError) as error:
        return {"error": f"invalid train request: {error}"}, 400
    ctx = context()
    try:
        outcome = handle(ctx, train_request, event_id=f"http:{train_request.request_id}")
    except PermanentError as error:
        return {"error": str(error)}, 400
    except TransientError as error:
        return {"error": f"try again: {error}"}, 503
    status = "duplicate" if outcome is None else outcome.state
    return {
        "request_id": train_request.request_id,
        "dataset": train_request.dataset,
        "status": status,
    }, 200


def _acknowledge_permanent(
    ctx: StepContext, error: PermanentError, attributes: dict[str, Any]
) -> None:
    """An event no retry can fix: log it and raise an alert, then acknowledge it."""
    event_id = str(attributes.get("id"))
    _log.error(
        "event %s rejected: %s",
        event_id,
        error,
        extra={"labels": {"event_id": event_id, "source": str(attributes.get("source"))}},
    )
    alert = Alert(
        dataset="unknown",
        step=ctx.settings.function_name,
        severity="ERROR",
        summary=f"event {event_id} rejected: {error}",
        details={
            "source": str(attributes.get("source")),
            "subject": str(attributes.get("subject")),
        },
        at=ctx.clock(),
    )
    ctx.bus.publish(alert)
