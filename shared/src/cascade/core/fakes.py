"""First-class fakes for unit tests: an in-memory artifact store and a recording bus.

They keep the real semantics that matter to Cascade (generations and generation
preconditions; messages validated and kept in order), so unit tests exercise the same
code paths as the emulators do, without a network.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from cascade.core.bus import MessageBus
from cascade.core.context import utc_now
from cascade.core.messages import StepMessage
from cascade.core.store import ArtifactStore, ObjectInfo, StoredObject

__all__ = ["MemoryArtifactStore", "RecordingBus"]


@dataclass
class _Version:
    data: bytes
    generation: int
    content_type: str
    updated: datetime


class MemoryArtifactStore(ArtifactStore):
    """An ArtifactStore over a dict, with Cloud Storage's generation preconditions."""

    def __init__(
        self, bucket_name: str = "memory-bucket", clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.bucket_name = bucket_name
        self.clock = clock
        self.objects: dict[str, _Version] = {}
        self._generations = itertools.count(1_000_001)
        self._lock = threading.Lock()

    def read(self, name: str) -> StoredObject | None:
        with self._lock:
            version = self.objects.get(name)
        if version is None:
            return None
        return StoredObject(name=name, data=version.data, generation=version.generation)

    def write(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
    ) -> int | None:
        with self._lock:
            current = self.objects.get(name)
            current_generation = 0 if current is None else current.generation
            if if_generation_match is not None and if_generation_match != current_generation:
                return None
            generation = next(self._generations)
            self.objects[name] = _Version(bytes(data), generation, content_type, self.clock())
            return generation

    def delete(self, name: str, *, if_generation_match: int | None = None) -> bool:
        with self._lock:
            current = self.objects.get(name)
            if current is None:
                return False
            if if_generation_match is not None and if_generation_match != current.generation:
                return False
            del self.objects[name]
            return True

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            found = sorted(
                (name, version) for name, version in self.objects.items() if name.startswith(prefix)
            )
        for name, version in found:
            yield ObjectInfo(name, version.generation, len(version.data), version.updated)


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
