"""Reading the CloudEvents Google Cloud sends: object finalized and message published.

Functions hand the event's attributes (``ce-*``) and data to these parsers, which
return typed values or raise BadRequestError naming the missing or invalid field.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cascade.core.errors import BadRequestError, StaleEventError, describe_validation_error
from cascade.core.topology import PUBSUB_PUBLISHED, STORAGE_FINALIZED

__all__ = [
    "PubSubEnvelope",
    "StorageObjectEvent",
    "check_event_age",
    "decode_message",
    "parse_event_time",
]

MessageT = TypeVar("MessageT", bound=BaseModel)


def _require(mapping: dict[str, Any], field: str, where: str) -> Any:
    value = mapping.get(field)
    if value in (None, ""):
        raise BadRequestError(f"{where}: missing field {field!r}")
    return value


def _check_type(attributes: dict[str, Any], expected: str) -> None:
    if attributes.get("type") != expected:
        raise BadRequestError(f"event type {attributes.get('type')!r}, expected {expected!r}")


def parse_event_time(attributes: dict[str, Any]) -> datetime:
    """The CloudEvent ``time`` attribute as an aware datetime."""
    raw = _require(attributes, "time", "CloudEvent")
    if isinstance(raw, datetime):
        return raw
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as error:
        raise BadRequestError(f"CloudEvent: invalid time {raw!r}") from error


def check_event_age(attributes: dict[str, Any], now: datetime, max_age_s: int) -> None:
    """Raise StaleEventError for events older than ``max_age_s``: drop, do not retry."""
    age = now - parse_event_time(attributes)
    if age > timedelta(seconds=max_age_s):
        raise StaleEventError(
            f"dropping event {attributes.get('id')}: {age.total_seconds():.0f}s old, "
            f"older than the {max_age_s}s maximum"
        )


class StorageObjectEvent(BaseModel):
    event_id: str
    bucket: str
    name: str
    generation: int
    size: int
    content_type: str = ""
    time_created: str = ""

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    @classmethod
    def from_cloudevent(cls, attributes: dict[str, Any], data: Any) -> StorageObjectEvent:
        _check_type(attributes, STORAGE_FINALIZED)
        if not isinstance(data, dict):
            raise BadRequestError("storage event: data is not a JSON object")
        where = f"storage event {attributes.get('id')}"
        try:
            return cls(
                event_id=str(_require(attributes, "id", where)),
                bucket=str(_require(data, "bucket", where)),
                name=str(_require(data, "name", where)),
                generation=int(_require(data, "generation", where)),
                size=int(data.get("size") or 0),
                content_type=str(data.get("contentType") or ""),
                time_created=str(data.get("timeCreated") or ""),
            )
        except (ValueError, ValidationError) as error:
            raise BadRequestError(f"{where}: {error}") from error


class PubSubEnvelope(BaseModel):
    event_id: str
    message_id: str
    subscription: str
    data: bytes
    attributes: dict[str, str]

    @classmethod
    def from_cloudevent(cls, attributes: dict[str, Any], data: Any) -> PubSubEnvelope:
        _check_type(attributes, PUBSUB_PUBLISHED)
        where = f"pubsub event {attributes.get('id')}"
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise BadRequestError(f"{where}: data has no 'message' object")
        message = data["message"]
        try:
            payload = base64.b64decode(message.get("data") or "", validate=True)
        except (binascii.Error, ValueError) as error:
            raise BadRequestError(f"{where}: message.data is not base64") from error
        return cls(
            event_id=str(_require(attributes, "id", where)),
            message_id=str(message.get("messageId") or message.get("message_id") or ""),
            subscription=str(data.get("subscription") or ""),
            data=payload,
            attributes={str(k): str(v) for k, v in (message.get("attributes") or {}).items()},
        )


def decode_message(envelope: PubSubEnvelope, model: type[MessageT]) -> MessageT:
    """Validate the message body as ``model``; BadRequestError names the bad fields."""
    try:
        return model.model_validate_json(envelope.data)
    except ValidationError as error:
        raise BadRequestError(
            f"message {envelope.message_id}: invalid {model.__name__}: "
            f"{describe_validation_error(error)}"
        ) from error
    except BadRequestError as error:  # a name check in the model (dataset, run id)
        raise BadRequestError(
            f"message {envelope.message_id}: invalid {model.__name__}: {error}"
        ) from error
