"""First-class fakes for unit tests: an in-memory artifact store and a recording bus.

They keep the real semantics that matter to Cascade (generations and generation
preconditions; messages validated and kept in order), so unit tests exercise the same
code paths as the emulators do, without a network.
"""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import BinaryIO

from cascade.core.bus import MessageBus
from cascade.core.context import utc_now
from cascade.core.messages import StepMessage
from cascade.core.store import (
    DEFAULT_UPDATE_ATTEMPTS,
    MAX_DECODED_BYTES,
    READ_CHUNK_BYTES,
    ArtifactStore,
    ObjectInfo,
    StoredObject,
    decoded,
)

__all__ = ["MemoryArtifactStore", "RecordingBus"]


@dataclass
class _Version:
    data: bytes
    generation: int
    content_type: str
    updated: datetime
    metadata: dict[str, str] = field(default_factory=dict)
    content_encoding: str = ""


class MemoryArtifactStore(ArtifactStore):
    """An ArtifactStore over a dict, with Cloud Storage's generation preconditions.

    Only the latest generation of an object is kept (a bucket without versioning): a
    read pinned to an older generation finds nothing.
    """

    def __init__(
        self,
        bucket_name: str = "memory-bucket",
        clock: Callable[[], datetime] = utc_now,
        *,
        update_attempts: int = DEFAULT_UPDATE_ATTEMPTS,
    ) -> None:
        self.bucket_name = bucket_name
        self.clock = clock
        self.update_attempts = update_attempts
        self.objects: dict[str, _Version] = {}
        self._generations = itertools.count(1_000_001)
        self._lock = threading.Lock()

    def _version(self, name: str, generation: int | None) -> _Version | None:
        with self._lock:
            version = self.objects.get(name)
        if version is None or generation not in (None, version.generation):
            return None
        return version

    def read(
        self,
        name: str,
        *,
        generation: int | None = None,
        metadata: bool = False,
        raw: bool = False,
        max_decoded_bytes: int = MAX_DECODED_BYTES,
    ) -> StoredObject | None:
        version = self._version(name, generation)
        if version is None:
            return None
        stored = StoredObject(
            name=name,
            data=version.data,
            generation=version.generation,
            metadata=dict(version.metadata) if metadata else {},
            content_encoding=version.content_encoding,
        )
        return stored if raw else decoded(stored, max_decoded_bytes, self.uri(name))

    def upload_encoded(self, name: str, data: bytes, content_encoding: str = "gzip") -> int:
        """Store ``data`` as ``gcloud storage cp -Z`` does: the bytes as given (gzip for
        ``-Z``), under ``content_encoding``; returns the generation."""
        generation = self.write(name, data)
        assert generation is not None
        with self._lock:
            self.objects[name] = replace(self.objects[name], content_encoding=content_encoding)
        return generation

    def stat(self, name: str, *, generation: int | None = None) -> ObjectInfo | None:
        version = self._version(name, generation)
        if version is None:
            return None
        return ObjectInfo(
            name,
            version.generation,
            len(version.data),
            version.updated,
            dict(version.metadata),
            version.content_encoding,
        )

    def open_read(
        self, name: str, *, generation: int | None = None, chunk_size: int = READ_CHUNK_BYTES
    ) -> AbstractContextManager[BinaryIO]:
        @contextmanager
        def reader() -> Iterator[BinaryIO]:
            version = self._version(name, generation)
            if version is None:
                raise FileNotFoundError(f"{self.uri(name)}#{generation}")
            yield io.BytesIO(version.data)

        return reader()

    def write(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        retry: bool = True,  # nothing to retry in memory
    ) -> int | None:
        with self._lock:
            current = self.objects.get(name)
            current_generation = 0 if current is None else current.generation
            if if_generation_match is not None and if_generation_match != current_generation:
                return None
            generation = next(self._generations)
            self.objects[name] = _Version(
                bytes(data), generation, content_type, self.clock(), dict(metadata or {})
            )
            return generation

    def copy(
        self,
        name: str,
        destination: ArtifactStore,
        new_name: str,
        *,
        generation: int | None = None,
    ) -> int | None:
        version = self._version(name, generation)
        if version is None:
            return None
        return destination.write(
            new_name, version.data, content_type=version.content_type, metadata=version.metadata
        )

    def delete(self, name: str, *, if_generation_match: int | None = None) -> bool:
        with self._lock:
            current = self.objects.get(name)
            if current is None:
                return False
            if if_generation_match is not None and if_generation_match != current.generation:
                return False
            del self.objects[name]
            return True

    def list_objects(
        self, prefix: str, *, start_offset: str | None = None, max_results: int | None = None
    ) -> Iterator[ObjectInfo]:
        with self._lock:
            found = sorted(
                (name, version)
                for name, version in self.objects.items()
                if name.startswith(prefix) and (start_offset is None or name >= start_offset)
            )
        for name, version in found[:max_results]:
            yield ObjectInfo(
                name,
                version.generation,
                len(version.data),
                version.updated,
                content_encoding=version.content_encoding,
            )


class RecordingBus(MessageBus):
    """A MessageBus that keeps what was published instead of sending it."""

    def __init__(self) -> None:
        self.published: list[StepMessage] = []
        self._ids = itertools.count(1)

    def publish(self, message: StepMessage) -> str:
        self.published.append(message)
        return str(next(self._ids))

    def of_type(self, message_type: type[StepMessage]) -> list[StepMessage]:
        return [message for message in self.published if isinstance(message, message_type)]
