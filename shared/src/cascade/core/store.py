"""The artifact store: one Cloud Storage bucket, with generation preconditions.

Every read returns the object's generation and every write can require one, which is
what optimistic concurrency (run records) and create-only claims are built on.
Object names are data: they are never joined into local filesystem paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import google.cloud.storage as storage
from google.api_core import exceptions as gexc
from pydantic import BaseModel

from cascade.core.errors import TransientError

__all__ = ["ArtifactStore", "ObjectInfo", "StoredObject"]

ModelT = TypeVar("ModelT", bound=BaseModel)

_TRANSIENT = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class StoredObject:
    name: str
    data: bytes
    generation: int


@dataclass(frozen=True)
class ObjectInfo:
    """An object's metadata from a listing (no content)."""

    name: str
    generation: int
    size: int
    updated: datetime | None


class ArtifactStore:
    """Reads and writes objects of one bucket; maps infrastructure errors to TransientError."""

    def __init__(self, client: storage.Client, bucket_name: str) -> None:
        self._bucket = client.bucket(bucket_name)
        self.bucket_name = bucket_name

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    def read(self, name: str) -> StoredObject | None:
        """The object's bytes and generation, or None if it does not exist."""
        blob = self._bucket.blob(name)
        try:
            data = blob.download_as_bytes()
        except gexc.NotFound:
            return None
        except _TRANSIENT as error:
            raise TransientError(f"reading {self.uri(name)}: {error}") from error
        return StoredObject(name=name, data=data, generation=int(blob.generation or 0))

    def read_model(self, name: str, model: type[ModelT]) -> tuple[ModelT, int] | None:
        """Parse a JSON object into ``model``; None if the object does not exist."""
        stored = self.read(name)
        if stored is None:
            return None
        return model.model_validate_json(stored.data), stored.generation

    def write(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
    ) -> int | None:
        """Write ``data``; with ``if_generation_match`` the write is conditional.

        Returns the new generation, or None when the precondition failed (the object
        exists for ``if_generation_match=0``, or changed since that generation).
        """
        blob = self._bucket.blob(name)
        try:
            blob.upload_from_string(
                data, content_type=content_type, if_generation_match=if_generation_match
            )
        except gexc.PreconditionFailed:
            return None
        except _TRANSIENT as error:
            raise TransientError(f"writing {self.uri(name)}: {error}") from error
        return int(blob.generation or 0)

    def write_json(
        self,
        name: str,
        value: BaseModel | dict[str, Any],
        *,
        if_generation_match: int | None = None,
    ) -> int | None:
        if isinstance(value, BaseModel):
            payload = value.model_dump_json(indent=2).encode()
        else:
            payload = json.dumps(value, indent=2, sort_keys=True).encode()
        return self.write(
            name, payload, content_type="application/json", if_generation_match=if_generation_match
        )

    def create(
        self, name: str, data: bytes, *, content_type: str = "application/json"
    ) -> int | None:
        """Create-only write: the generation if this call created it, else None."""
        return self.write(name, data, content_type=content_type, if_generation_match=0)

    def delete(self, name: str, *, if_generation_match: int | None = None) -> bool:
        """Delete; False when it was already gone or the precondition failed."""
        try:
            self._bucket.blob(name).delete(if_generation_match=if_generation_match)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return False
        except _TRANSIENT as error:
            raise TransientError(f"deleting {self.uri(name)}: {error}") from error
        return True

    def list_names(self, prefix: str) -> Iterator[str]:
        for info in self.list_objects(prefix):
            yield info.name

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            for blob in self._bucket.client.list_blobs(self._bucket, prefix=prefix):
                yield ObjectInfo(
                    name=blob.name,
                    generation=int(blob.generation or 0),
                    size=int(blob.size or 0),
                    updated=blob.updated,
                )
        except _TRANSIENT as error:
            raise TransientError(f"listing {self.uri(prefix)}: {error}") from error
