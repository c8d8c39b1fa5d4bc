"""An in-memory stand-in for ``google.cloud.storage.Client``, for the validate step's tests.

It implements the part of the client the step and ``ArtifactStore`` use, with the
semantics they rely on: every write makes a new generation, ``if_generation_match``
preconditions (0 = must not exist) raise PreconditionFailed, a blob pinned to a
generation that is gone raises NotFound, custom metadata travels with a write, and
``open("rb")`` streams the stored bytes. Only the latest generation is kept, as in a
bucket without object versioning.

The classes satisfy ``cascade.core.protocols`` (``StorageClient``, ``StorageBucket``,
``StorageBlob``), which mypy checks at the bottom of this module; the real client is
checked against the same protocols by ``tests/unit/test_protocols.py``.
"""

from __future__ import annotations

import gzip
import io
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.api_core import exceptions as gexc

from cascade.core.protocols import StorageBlob, StorageBucket, StorageClient


@dataclass
class _Version:
    data: bytes
    generation: int
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    content_encoding: str | None = None
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))


class FakeBlob:
    def __init__(self, bucket: FakeBucket, name: str, generation: int | None = None) -> None:
        self.bucket = bucket
        self.name = name
        self.generation = generation
        self.metadata: dict[str, str] | None = None
        self.content_encoding: str | None = None
        self.size: int | None = None
        self.updated: datetime | None = None

    def _current(self) -> _Version:
        version = self.bucket.objects.get(self.name)
        pinned_elsewhere = version is not None and self.generation not in (None, version.generation)
        if version is None or pinned_elsewhere:
            raise gexc.NotFound(f"{self.bucket.name}/{self.name}#{self.generation}")
        return version

    def reload(self) -> None:
        version = self._current()
        self.generation, self.size = version.generation, len(version.data)
        self.metadata, self.updated = dict(version.metadata), version.updated
        self.content_encoding = version.content_encoding

    def download_as_bytes(self, raw_download: bool = False) -> bytes:
        """As the client: a gzip ``Content-Encoding`` is undone, whole, unless
        ``raw_download``."""
        version = self._current()
        self.generation = version.generation
        self.content_encoding = version.content_encoding  # the response's header, as stored
        self.bucket.client.downloads.append(self.name)
        if version.content_encoding == "gzip" and not raw_download:
            return gzip.decompress(version.data)
        return version.data

    def open(
        self, mode: str = "rb", chunk_size: int | None = None, raw_download: bool = False
    ) -> io.BytesIO:
        assert mode == "rb", "the fake only streams reads"
        return io.BytesIO(self.download_as_bytes(raw_download=raw_download))

    def upload_from_string(
        self,
        data: bytes | str,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
        retry: object = None,  # the store passes its retry policy of unconditional writes
    ) -> None:
        payload = data.encode() if isinstance(data, str) else bytes(data)
        with self.bucket.client.lock:
            current = self.bucket.objects.get(self.name)
            current_generation = 0 if current is None else current.generation
            if if_generation_match is not None and if_generation_match != current_generation:
                raise gexc.PreconditionFailed(f"{self.name}: generation {current_generation}")
            generation = next(self.bucket.client.generations)
            self.bucket.objects[self.name] = _Version(
                payload,
                generation,
                content_type,
                dict(self.metadata or {}),
                self.content_encoding,
            )
            self.generation = generation

    def delete(self, if_generation_match: int | None = None) -> None:
        with self.bucket.client.lock:
            current = self.bucket.objects.get(self.name)
            if current is None:
                raise gexc.NotFound(self.name)
            if if_generation_match is not None and if_generation_match != current.generation:
                raise gexc.PreconditionFailed(self.name)
            del self.bucket.objects[self.name]


class FakeBucket:
    def __init__(self, client: FakeStorageClient, name: str) -> None:
        self.client = client
        self.name = name
        self.objects: dict[str, _Version] = {}

    def blob(self, name: str, generation: int | None = None) -> FakeBlob:
        return FakeBlob(self, name, generation)

    def get_blob(self, name: str) -> FakeBlob | None:
        blob = FakeBlob(self, name)
        try:
            blob.reload()
        except gexc.NotFound:
            return None
        return blob

    def copy_blob(
        self,
        blob: StorageBlob,
        destination_bucket: StorageBucket,
        new_name: str,
        source_generation: int | None = None,
    ) -> StorageBlob:
        source = FakeBlob(self, blob.name, source_generation)
        copied = destination_bucket.blob(new_name)
        copied.upload_from_string(source.download_as_bytes())
        return copied


class FakeStorageClient:
    """Buckets are created on first use, like the emulator's test setup."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.generations = itertools.count(1_000_001)
        self.buckets: dict[str, FakeBucket] = {}
        self.downloads: list[str] = []

    def bucket(self, name: str) -> FakeBucket:
        with self.lock:
            return self.buckets.setdefault(name, FakeBucket(self, name))

    def list_blobs(
        self,
        bucket: StorageBucket,
        prefix: str = "",
        start_offset: str | None = None,
        max_results: int | None = None,
    ) -> Iterator[FakeBlob]:
        assert isinstance(bucket, FakeBucket), "the fake lists only its own buckets"
        listed = 0
        for name in sorted(bucket.objects):
            if name.startswith(prefix) and (start_offset is None or name >= start_offset):
                if max_results is not None and listed >= max_results:
                    return
                blob = bucket.blob(name)
                blob.reload()  # a listing carries each object's generation, size, time
                listed += 1
                yield blob

    def put(self, bucket: str, name: str, data: bytes, *, content_encoding: str = "") -> int:
        """Upload ``data`` and return the new generation (what an upload event carries)."""
        blob = self.bucket(bucket).blob(name)
        blob.content_encoding = content_encoding or None
        blob.upload_from_string(data)
        assert blob.generation is not None
        return blob.generation


def _conforms(client: FakeStorageClient, bucket: FakeBucket, blob: FakeBlob) -> None:
    """Never called: mypy checks here that the fakes satisfy the storage protocols."""
    _client: StorageClient = client
    _bucket: StorageBucket = bucket
    _blob: StorageBlob = blob
