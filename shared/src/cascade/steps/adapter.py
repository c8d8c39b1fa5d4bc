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
from cascade.core.errors import (
    BadRequestError,
    PermanentError,
    StaleEventError,
    describe_validation_error,
    is_transient,
)
from cascade.core.events import PubSubEnvelope, check_event_age, decode_message
from cascade.core.json_body import BodyError, read_json_object
from cascade.core.messages import Alert, StepMessage, TrainRequest
from cascade.core.observability import configure_logging
from cascade.core.paths import DatasetPaths, check_dataset_name
from cascade.core.runs import run_id_for_request
from cascade.core.settings import load_settings
from cascade.steps.runner import StepOutcome
from cascade.transform.catalog import latest_transform

__all__ = [
    "context",
    "dataset_is_known",
    "run_cloudevent",
    "run_http_train_request",
    "run_pubsub_event",
]

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


TRAIN_BODY_SHAPE = "{dataset, request_id?, hyperparameters?, tune?, reason?}"
SYSTEM_ONLY_FIELDS = {
    "run_id": (
        "run ids are derived by Cascade from the dataset and request_id; "
        "a request cannot name a run"
    ),
}
"""TrainRequest fields only the system sets (transform, the training lock's hand-over)."""
RESERVED_REQUEST_ID_PREFIXES = ("run:", "follow-up:", "message:", "release:", "monitor:")
"""Request ids the system derives for its own requests; a caller's would alias them."""


MAX_ERROR_CHARS = 1_000
"""An answer names the problem; it never echoes a large part of the body back."""


def _refusal(status: int, message: str, **fields: Any) -> tuple[dict[str, Any], int]:
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    return {"error": message, **fields}, status


def run_http_train_request(
    request: flask.Request, handle: Callable[..., StepOutcome | None]
) -> tuple[dict[str, Any], int]:
    """POST /: a JSON TrainRequest; ``request_id`` defaults to a new uuid.

    Authentication is Cloud Run's IAM invoker check in the cloud (no public invoker).
    The body passes ``cascade.core.json_body`` first (POST, application/json, at most
    64 KiB, nested at most 8 deep, a JSON object) and then the TrainRequest model (its
    limits on reason and hyperparameters); ``run_id`` is refused: the run id is always
    derived from the dataset and request id. Returns a JSON body and status: 200 with
    the run id and the train step's status (``error`` too when it failed), 400 naming
    the bad field, 404 for a dataset Cascade has never seen (no pipeline config, no
    accepted data, no transform), 405/413/415 for the wrong method, size or content
    type, 503 when a retry may succeed. Bad input never gets a 5xx.
    """
    try:
        body = read_json_object(request, shape=TRAIN_BODY_SHAPE)
    except BodyError as error:
        return _refusal(error.status, str(error))
    for name, why in SYSTEM_ONLY_FIELDS.items():
        if name in body:
            return _refusal(400, f"{name}: not allowed: {why}", field=name)
    if body.get("request_id") is None:
        body["request_id"] = str(uuid.uuid4())
    request_id = body["request_id"]
    if isinstance(request_id, str) and request_id.startswith(RESERVED_REQUEST_ID_PREFIXES):
        return _refusal(
            400,
            "request_id: the prefixes "
            f"{', '.join(RESERVED_REQUEST_ID_PREFIXES)} are reserved for Cascade's own requests",
            field="request_id",
        )
    dataset = body.get("dataset")
    if isinstance(dataset, str):  # checked here, so the answer names the field
        try:
            check_dataset_name(dataset)
        except BadRequestError as error:
            return _refusal(400, f"invalid train request: dataset: {error}", field="dataset")
    try:
        train_request = TrainRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]["loc"]
        return _refusal(
            400,
            f"invalid train request: {describe_validation_error(error)}",
            field=str(first[0]) if first else "<body>",
        )
    except BadRequestError as error:
        return _refusal(400, f"invalid train request: {error}")
    assert train_request.request_id is not None
    ctx = context()
    run_id = run_id_for_request(train_request.dataset, train_request.request_id)
    try:
        if not dataset_is_known(ctx, train_request.dataset):
            return _refusal(
                404,
                f"unknown dataset {train_request.dataset!r}: it has no pipeline config, no "
                "accepted data and no transform; upload a data file (or push its config) first",
                field="dataset",
                dataset=train_request.dataset,
            )
        outcome = handle(ctx, train_request, event_id=f"http:{train_request.request_id}")
    except PermanentError as error:
        return _refusal(400, str(error), run_id=run_id)
    except Exception as error:
        if not is_transient(error):
            raise
        return _refusal(503, f"try again: {error}", run_id=run_id)
    answer: dict[str, Any] = {
        "run_id": run_id,
        "request_id": train_request.request_id,
        "dataset": train_request.dataset,
        "status": "duplicate" if outcome is None else outcome.state,
    }
    if outcome is not None and outcome.state != "succeeded":
        answer["error"] = outcome.summary
    return answer, 200


def dataset_is_known(ctx: StepContext, dataset: str) -> bool:
    """Whether ``dataset`` has a pipeline config, a transform or any accepted data."""
    paths = DatasetPaths(dataset)
    if ctx.artifacts.stat(paths.pipeline_config) is not None:
        return True
    if latest_transform(ctx.artifacts, dataset) is not None:
        return True
    return next(iter(ctx.artifacts.list_names(paths.accepted_prefix)), None) is not None


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
