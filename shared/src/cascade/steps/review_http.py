"""``POST`` to the ``review-http`` function: release or discard a quarantined file.

Body: ``{"action": "release" | "discard", "run_id": "...", "reason": "...", "actor"?}``.
In the cloud the function has no public invoker (topology ``invokers: review``,
Terraform ``review_http_invokers``): Cloud Run checks the caller's Google-signed ID
token before the request arrives, and its ``email`` claim is recorded as
``authenticated_as`` (and as the actor when the body names none). The body passes
``cascade.core.json_body`` first (POST, application/json, at most 64 KiB, nested at most
8 deep, a JSON object), then ``ReviewRequest`` (no unknown field). Answers 200 with the
review (and for a release, the new run's id and state), 400 naming a bad field, 404 for
an unknown run, 405/413/415 for the wrong method, size or content type, 409 when the run
is not quarantined or was reviewed already, 503 when a retry may succeed; bad input
never gets a 5xx. See ``cascade.steps.quarantine_review``.
"""

from __future__ import annotations

from typing import Any, Literal

import flask
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cascade.core.context import StepContext
from cascade.core.errors import (
    PermanentError,
    TransientError,
    describe_validation_error,
    is_transient,
)
from cascade.core.json_body import BodyError, read_json_object
from cascade.steps.bless_http import authenticated_email
from cascade.steps.quarantine_review import (
    MAX_ACTOR_CHARS,
    MAX_REVIEW_REASON_CHARS,
    MIN_REVIEW_REASON_CHARS,
    CannotReviewError,
    UnknownRunError,
    discard,
    release,
)

__all__ = ["ReviewRequest", "handle_http_review"]

_MAX_ERROR_CHARS = 1000


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["release", "discard"]
    run_id: str = Field(min_length=1, max_length=200, pattern=r"^[a-z][a-z0-9_-]*$")
    reason: str = Field(min_length=MIN_REVIEW_REASON_CHARS, max_length=MAX_REVIEW_REASON_CHARS)
    actor: str | None = Field(None, min_length=1, max_length=MAX_ACTOR_CHARS)


def _refusal(status: int, message: str, **fields: Any) -> tuple[dict[str, Any], int]:
    if len(message) > _MAX_ERROR_CHARS:
        message = message[: _MAX_ERROR_CHARS - 3] + "..."
    return {"error": message, **fields}, status


def handle_http_review(ctx: StepContext, request: flask.Request) -> tuple[dict[str, Any], int]:
    try:
        body = read_json_object(request, shape="{action, run_id, reason, actor?}")
    except BodyError as error:
        return _refusal(error.status, str(error))
    try:
        review = ReviewRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]["loc"]
        return _refusal(
            400,
            f"invalid review request: {describe_validation_error(error)}",
            field=str(first[0]) if first else "<body>",
        )
    authenticated_as = authenticated_email(request.headers.get("Authorization"))
    actor = review.actor or authenticated_as
    if actor is None:
        return _refusal(
            400,
            "actor: required when the request carries no authenticated identity",
            field="actor",
        )
    answer: dict[str, Any] = {"run_id": review.run_id, "action": review.action}
    try:
        if review.action == "release":
            released = release(
                ctx,
                review.run_id,
                actor=actor,
                reason=review.reason,
                via="http",
                authenticated_as=authenticated_as,
            )
            answer["review"] = released.review.model_dump(mode="json")
            answer["release_run_id"] = released.run.run_id
            answer["release_state"] = released.run.state
            answer["summary"] = released.summary
        else:
            discarded = discard(
                ctx,
                review.run_id,
                actor=actor,
                reason=review.reason,
                via="http",
                authenticated_as=authenticated_as,
            )
            answer["review"] = discarded.model_dump(mode="json")
    except UnknownRunError as error:
        return _refusal(404, str(error), field="run_id")
    except CannotReviewError as error:
        return _refusal(409, str(error))
    except TransientError as error:
        return _refusal(503, f"try again: {error}")
    except PermanentError as error:
        return _refusal(400, str(error), field=_field_of(str(error)))
    except Exception as error:
        if not is_transient(error):
            raise
        return _refusal(503, f"try again: {error}")
    return answer, 200


def _field_of(message: str) -> str:
    for name in ("run_id", "reason", "actor"):
        if message.startswith(name) or f"invalid {name}" in message:
            return name
    return "<body>"
