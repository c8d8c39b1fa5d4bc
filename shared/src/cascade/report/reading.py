"""Reading a run's artifacts for the report: absent or unreadable is an answer, not an error.

A report is most wanted when something went wrong, so a missing or corrupt artifact
becomes a sentence in its section; only storage failures (``TransientError``) escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from cascade.core.errors import describe_validation_error
from cascade.core.store import ArtifactStore

__all__ = ["Read", "object_name", "read_json"]

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Read(Generic[ModelT]):
    """A parsed artifact, or ``problem``: why there is none (absent, invalid)."""

    value: ModelT | None
    problem: str | None = None


def object_name(artifacts: ArtifactStore, uri: str) -> str | None:
    """The object name of a ``gs://`` URI in the artifacts bucket; None for any other URI."""
    prefix = f"gs://{artifacts.bucket_name}/"
    if not uri.startswith(prefix) or len(uri) == len(prefix):
        return None
    return uri[len(prefix) :]


def read_json(artifacts: ArtifactStore, name: str, model: type[ModelT]) -> Read[ModelT]:
    """``name`` parsed as ``model``; absent and invalid objects are described, not raised."""
    stored = artifacts.read(name)
    if stored is None:
        return Read(None, f"{artifacts.uri(name)} does not exist")
    try:
        return Read(model.model_validate_json(stored.data))
    except ValidationError as error:
        detail = describe_validation_error(error)
        return Read(None, f"{artifacts.uri(name)} is not a valid {model.__name__}: {detail}")
