"""One exception tree that says what retries.

Permanent errors (bad data, bad request, invalid config) are recorded on the run,
alerted, and acknowledged: retrying cannot fix them. Transient errors (network, 5xx,
quota, a concurrent owner still working) are raised out of the function so that the
trigger redelivers the event with backoff, up to the topology's max delivery attempts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.api_core import exceptions as gexc
from pydantic import ValidationError

__all__ = [
    "TRANSIENT_ERRORS",
    "TRANSIENT_GOOGLE_ERRORS",
    "BadInputError",
    "BadRequestError",
    "CascadeError",
    "ConcurrentUpdateError",
    "InvalidConfigError",
    "PermanentError",
    "StaleEventError",
    "StepInProgressError",
    "TransientError",
    "UnknownJobError",
    "describe_validation_error",
    "is_transient",
    "transient_errors",
]


class CascadeError(Exception):
    """Base of every error Cascade raises on purpose."""


class PermanentError(CascadeError):
    """Retrying cannot help: record it, alert, and acknowledge the event."""


class BadInputError(PermanentError):
    """A data file cannot be used. The message names the file and row/column/field."""

    def __init__(self, message: str, *, uri: str = "", location: str = "") -> None:
        self.uri = uri
        self.location = location
        prefix = " ".join(part for part in (uri, location) if part)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class BadRequestError(PermanentError):
    """An event, message or HTTP request is malformed or names something unknown."""


class InvalidConfigError(PermanentError):
    """A pipeline config or runtime setting is invalid."""


class StaleEventError(PermanentError):
    """The event is older than the maximum event age; it is dropped with a log line."""


class TransientError(CascadeError):
    """Worth retrying: raise it out of the function so the trigger redelivers."""


class ConcurrentUpdateError(TransientError):
    """An optimistic-concurrency update lost too many races in a row."""


class StepInProgressError(TransientError):
    """Another delivery of the same event holds a live claim on this step.

    Raised (so the event is redelivered later) instead of acknowledged, so that if the
    owner dies mid-step its lease expires and a redelivery finishes the work.
    """


TRANSIENT_GOOGLE_ERRORS: tuple[type[gexc.GoogleAPICallError], ...] = (
    gexc.TooManyRequests,  # 429; gRPC RESOURCE_EXHAUSTED is its subclass
    gexc.InternalServerError,  # 500
    gexc.BadGateway,  # 502
    gexc.ServiceUnavailable,  # 503; gRPC UNAVAILABLE
    gexc.GatewayTimeout,  # 504; gRPC DEADLINE_EXCEEDED is its subclass
)
"""Google API errors that say "try again later": quota, overload, a server-side failure."""

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    *TRANSIENT_GOOGLE_ERRORS,
    ConnectionError,
    TimeoutError,
)
"""Every infrastructure error a retry can fix: the Google ones and the network's."""


def is_transient(error: BaseException) -> bool:
    """Whether retrying what raised ``error`` can succeed (TransientError included)."""
    return isinstance(error, (TransientError, *TRANSIENT_ERRORS))


@contextmanager
def transient_errors(action: str, *, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Re-raise a transient infrastructure error as ``TransientError("<action>: <error>")``.

    ``also`` names further errors that are transient where this is used (publishing
    treats every API error so). Other errors, NotFound and PreconditionFailed among
    them, pass through for the caller to handle.
    """
    try:
        yield
    except (*TRANSIENT_ERRORS, *also) as error:
        raise TransientError(f"{action}: {error}") from error


def describe_validation_error(error: ValidationError, *, root: str = "<body>") -> str:
    """``field.path: message; ...`` for each problem, ``root`` naming a top-level one
    (without the ``Value error,`` pydantic puts before a validator's own message)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or root}: "
        f"{str(item['msg']).removeprefix('Value error, ')}"
        for item in error.errors()
    )


class UnknownJobError(BadRequestError):
    """The job runner has no job of that name (never submitted there, or since deleted)."""
