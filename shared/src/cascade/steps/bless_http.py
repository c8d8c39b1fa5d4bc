"""``POST`` to the ``evaluate-http`` function: force-bless a run (the audited override).

Body: ``{"run_id": "...", "reason": "...", "actor": "..."}``. In the cloud the function
has no public invoker: Cloud Run checks the caller's Google-signed ID token before the
request arrives, and its ``email`` claim is recorded next to the actor the caller named.
The body passes ``cascade.core.json_body`` first (POST, application/json, at most
64 KiB, nested at most 8 deep, a JSON object), then ``BlessRequest`` (no unknown field).
Answers 200 with the updated verdict, 400 naming a bad field, 404 for an unknown run,
405/413/415 for the wrong method, size or content type, 409 when the run cannot be
blessed, 503 when a retry may succeed; bad input never gets a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

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
from cascade.evaluation.override import CannotBlessError, force_bless

__all__ = ["BlessRequest", "handle_http_bless"]


class BlessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(min_length=1, max_length=200, pattern=r"^[a-z][a-z0-9_-]*$")
    reason: str = Field(min_length=3, max_length=2000)
    actor: str = Field(min_length=1, max_length=200)


def authenticated_email(authorization: str | None) -> str | None:
    """The ``email`` claim of the bearer ID token Cloud Run has already verified.

    Only the payload is decoded (the platform checked the signature); the token itself is
    never logged or stored.
    """
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    parts = authorization.split(" ", 1)[1].strip().split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    email = payload.get("email") if isinstance(payload, dict) else None
    return email if isinstance(email, str) else None


def handle_http_bless(ctx: StepContext, request: flask.Request) -> tuple[dict[str, Any], int]:
    try:
        body = read_json_object(request, shape="{run_id, reason, actor}")
    except BodyError as error:
        return {"error": str(error)}, error.status
    try:
        bless = BlessRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]["loc"]
        problem = describe_validation_error(error)
        return {
            "error": f"invalid bless request: {problem[:1000]}",
            "field": str(first[0]) if first else "<body>",
        }, 400
    try:
        known = ctx.ledger.get(bless.run_id) is not None
    except PermanentError as error:
        return {"error": f"run_id: {error}", "field": "run_id"}, 400
    except Exception as error:
        if not is_transient(error):
            raise
        return {"error": f"try again: {error}"}, 503
    if not known:
        return {"error": f"no run {bless.run_id}"}, 404
    try:
        record = force_bless(
            artifacts=ctx.artifacts,
            ledger=ctx.ledger,
            bus=ctx.bus,
            run_id=bless.run_id,
            actor=bless.actor,
            reason=bless.reason,
            via="http",
            now=ctx.clock(),
            authenticated_as=authenticated_email(request.headers.get("Authorization")),
        )
    except CannotBlessError as error:
        return {"error": str(error)}, 409
    except PermanentError as error:
        return {"error": str(error)}, 400
    except TransientError as error:
        return {"error": f"try again: {error}"}, 503
    assert record.override is not None
    return {
        "run_id": record.run_id,
        "verdict": record.verdict,
        "override": record.override.model_dump(mode="json"),
    }, 200
