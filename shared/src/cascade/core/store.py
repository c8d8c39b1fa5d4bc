"""The artifact store: one Cloud Storage bucket, with generation preconditions.

Every read returns the object's generation and every write can require one, which is
what optimistic concurrency (run records, locks, serving state, baselines) and
create-only claims are built on. ``update`` is *the* read-modify-write loop: read the
object, let a function decide its new value, write it back only if nobody else wrote
in between, and start over when somebody did, a bounded number of times.
Object names are data: they are never joined into local filesystem paths.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, BinaryIO, Generic, Protocol, TypeVar, overload

import google.cloud.storage as storage
import requests
from google.api_core import exceptions as gexc
from pydantic import BaseModel

from cascade.core.errors import BadInputError, ConcurrentUpdateError, transient_errors

__all__ = [
    "DEFAULT_UPDATE_ATTEMPTS",
    "MAX_DECODED_BYTES",
    "RATE_LIMITED_RETRY",
    "READ_CHUNK_BYTES",
    "READ_CONCURRENCY",
    "ArtifactStore",
    "Codec",
    "JsonModel",
    "ObjectInfo",
    "Payload",
    "StoredObject",
    "Updated",
    "decoded",
    "encoding_problem",
    "is_gzip_encoding",
    "new_storage_client",
    "read_concurrently",
]

DEFAULT_UPDATE_ATTEMPTS = 20
"""How many lost races an ``update`` survives (``Settings.run_update_attempts`` sets it)."""

READ_CHUNK_BYTES = 8 * 1024 * 1024
"""How much ``open_read`` fetches per request while streaming."""

MAX_DECODED_BYTES = 64 * 1024 * 1024
"""The most an object stored gzip-encoded may expand to in ``read`` (configs, schemas,
model code: a few KiB; a gzip bomb of a few hundred KiB would expand to gigabytes)."""

READ_CONCURRENCY = 8
"""Reads ``read_concurrently`` keeps in flight: under the storage client's connection
pool (10), so none waits for a connection or opens one it then throws away."""


def read_concurrently(
    read: Callable[[ItemT], ResultT], items: Sequence[ItemT], *, name: str = "read"
) -> list[ResultT]:
    """``read`` of every item, in order, up to ``READ_CONCURRENCY`` at a time: for many
    small objects, where each read is a round trip to Cloud Storage. The first error
    raised is raised here (the reads already started finish first)."""
    if len(items) <= 2:
        return [read(item) for item in items]
    workers = min(READ_CONCURRENCY, len(items))
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        return list(pool.map(read, items))


def _rate_limited(error: BaseException) -> bool:
    """A 429, as the client raises it (uploads raise the media layer's InvalidResponse
    inside the retry, TooManyRequests only once it gives up), or a connection that broke
    before any answer (a reused keep-alive connection the server had closed: the
    client's default policy retries these for idempotent requests too)."""
    if isinstance(error, gexc.TooManyRequests | requests.exceptions.ConnectionError):
        return True
    return getattr(getattr(error, "response", None), "status_code", None) == 429


RATE_LIMITED_RETRY = storage.retry.DEFAULT_RETRY.with_predicate(_rate_limited)
"""An unconditional write retries 429 (Cloud Storage's same-object limit: nothing was
written) and a broken connection (at worst the same bytes are written twice to the same
name by the same writer) only, with the client's exponential backoff; a conditional
write keeps the client's default policy, which retries both among other transient
errors."""


def new_storage_client(**kwargs: Any) -> storage.Client:
    """``storage.Client(**kwargs)`` without the client's background bucket probe.

    Since 3.11 the client looks up every bucket it touches (``buckets.get``, on a
    background thread, on first use and again after each object 404) to label
    OpenTelemetry spans Cascade does not emit. A function's service account holds object
    permissions only, so each probe is refused: an ERROR in the Data Access audit log for
    every missing object a step checks for, and a request of its own
    (googleapis/google-cloud-python#17650; the constructor option proposed in #18203 is
    not released). The client checks ``_bucket_metadata_cache`` before each probe; with
    it unset, none is made (``tests/integration/test_storage_client_requests.py``).
    """
    client = storage.Client(**kwargs)
    if getattr(client, "_bucket_metadata_cache", None) is not None:
        client._bucket_metadata_cache = None
    return client


ModelT = TypeVar("ModelT", bound=BaseModel)
ValueT = TypeVar("ValueT")
ValueT_co = TypeVar("ValueT_co", covariant=True)
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class StoredObject:
    name: str
    data: bytes
    generation: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Custom metadata; read only when asked for (``read(..., metadata=True)``)."""
    content_encoding: str = ""
    """The ``Content-Encoding`` of ``data``: empty once ``read`` decoded it; as stored for
    ``read(..., raw=True)``."""


def is_gzip_encoding(encoding: str) -> bool:
    """``Content-Encoding`` names gzip (what ``gcloud storage cp -Z`` stores)."""
    return encoding.strip().lower() in ("gzip", "x-gzip")


def encoding_problem(encoding: str) -> str:
    """Why bytes stored under ``encoding`` cannot be read ('' when they can).

    Cloud Storage decompresses only gzip when serving (decompressive transcoding); an
    object stored under another compression (``br``, ``zstd``, ``deflate``,
    ``compress``) is served as stored, so its bytes are not what its name says. Any
    other label (``identity``, or a slip such as ``utf-8``) leaves the bytes as they are.
    """
    compressions = [
        token.strip().lower()
        for token in encoding.split(",")
        if token.strip().lower() in _OTHER_COMPRESSIONS
    ]
    if not compressions:
        return ""
    return (
        f"the object is stored with Content-Encoding: {encoding.strip()}, which Cloud "
        "Storage serves as stored (it decompresses only gzip): upload it without "
        "Content-Encoding, or gzip-encoded (`gcloud storage cp -Z`)"
    )


_OTHER_COMPRESSIONS = frozenset({"br", "zstd", "deflate", "compress", "x-compress", "x-bzip2"})


def decoded(stored: StoredObject, max_bytes: int, uri: str) -> StoredObject:
    """``stored`` with its gzip ``Content-Encoding`` undone, expanding to at most
    ``max_bytes``; BadInputError naming ``uri`` beyond that, for corrupt gzip, or for an
    encoding Cloud Storage does not decompress either."""
    problem = encoding_problem(stored.content_encoding)
    if problem:
        raise BadInputError(problem, uri=uri)
    if not is_gzip_encoding(stored.content_encoding):
        return replace(stored, content_encoding="")
    parts: list[bytes] = []
    size = 0
    rest = stored.data
    try:
        while rest:  # members one after another, as gzip allows
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            part = member.decompress(rest, max_bytes - size + 1)
            size += len(part)
            if size > max_bytes:
                raise BadInputError(
                    f"the object is stored with Content-Encoding: gzip and expands to more "
                    f"than {max_bytes} bytes",
                    uri=uri,
                )
            if not member.eof:
                raise BadInputError(
                    "the object is stored with Content-Encoding: gzip but its gzip data "
                    "is truncated",
                    uri=uri,
                )
            parts.append(part)
            rest = member.unused_data
    except zlib.error as error:
        raise BadInputError(
            f"the object is stored with Content-Encoding: gzip but is not valid gzip ({error})",
            uri=uri,
        ) from None
    return replace(stored, data=b"".join(parts), content_encoding="")


@dataclass(frozen=True)
class ObjectInfo:
    """An object's metadata (no content), from a listing or ``stat``."""

    name: str
    generation: int
    size: int
    updated: datetime | None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Custom metadata; filled by ``stat`` (a listing leaves it empty)."""
    content_encoding: str = ""
    """The object's ``Content-Encoding`` (``gzip``: stored compressed, and Cloud
    Storage would decompress it while serving it; ``read`` and ``open_read`` do not)."""


@dataclass(frozen=True)
class Payload:
    """What a write stores: the bytes, their content type and custom metadata."""

    data: bytes
    content_type: str = "application/octet-stream"
    metadata: Mapping[str, str] | None = None


class Codec(Protocol[ValueT]):
    """How a value is kept in one object: what ``update`` decodes and encodes."""

    @property
    def reads_metadata(self) -> bool:
        """Whether ``decode`` needs the object's custom metadata (one more request)."""
        ...

    def decode(self, stored: StoredObject) -> ValueT: ...

    def encode(self, value: ValueT) -> Payload: ...


@dataclass(frozen=True)
class JsonModel(Generic[ModelT]):
    """A pydantic model kept as indented JSON, exactly as ``write_json`` writes it."""

    model: type[ModelT]
    reads_metadata = False

    def decode(self, stored: StoredObject) -> ModelT:
        return self.model.model_validate_json(stored.data)

    def encode(self, value: ModelT) -> Payload:
        return Payload(value.model_dump_json(indent=2).encode(), "application/json")


@dataclass(frozen=True)
class Updated(Generic[ValueT_co]):
    """What an ``update`` left in the object."""

    value: ValueT_co
    """The value now stored: what ``change`` returned, or what it was given when it
    returned None (then None if there is no object)."""
    generation: int
    """The object's generation now (0: there is no object)."""
    written: bool
    """False when ``change`` kept the object as it was (returned None or an equal value)."""


class ArtifactStore:
    """Reads and writes objects of one bucket; maps infrastructure errors to TransientError."""

    def __init__(
        self,
        client: storage.Client,
        bucket_name: str,
        *,
        update_attempts: int = DEFAULT_UPDATE_ATTEMPTS,
    ) -> None:
        self._bucket = client.bucket(bucket_name)
        self.bucket_name = bucket_name
        self.update_attempts = update_attempts

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    # -- reading --------------------------------------------------------------------------

    def read(
        self,
        name: str,
        *,
        generation: int | None = None,
        metadata: bool = False,
        raw: bool = False,
        max_decoded_bytes: int = MAX_DECODED_BYTES,
    ) -> StoredObject | None:
        """The object's bytes and its generation; None if it does not exist.

        An object stored with ``Content-Encoding: gzip`` (``gcloud storage cp -Z`` of a
        config, a schema, model code) is decompressed here, to at most
        ``max_decoded_bytes`` (``decoded``: BadInputError naming the object beyond it,
        or for an encoding Cloud Storage does not decompress). The bytes are always
        fetched as stored (``raw_download``): the client would otherwise undo the
        encoding itself, with no limit on what it expands to.

        ``raw=True`` returns the bytes as stored, with their ``content_encoding``, for
        readers of landed files that decompress bounded themselves.
        ``generation`` pins the read to that generation (None if it is gone).
        ``metadata=True`` also reads the custom metadata, consistently with the bytes
        (two requests: the metadata, then the bytes of that very generation).
        """
        if metadata:
            stored = self._read_with_metadata(name, generation)
        else:
            blob = self._bucket.blob(name, generation=generation)
            try:
                with transient_errors(f"reading {self.uri(name)}"):
                    data = blob.download_as_bytes(raw_download=True)
            except gexc.NotFound:
                return None
            stored = StoredObject(
                name=name,
                data=data,
                generation=int(blob.generation or 0),
                content_encoding=blob.content_encoding or "",  # the response's header
            )
        if stored is None or raw:
            return stored
        return decoded(stored, max_decoded_bytes, self.uri(name))

    def _read_with_metadata(self, name: str, generation: int | None) -> StoredObject | None:
        for _ in range(self.update_attempts):
            info = self.stat(name, generation=generation)
            if info is None:
                return None
            stored = self.read(name, generation=info.generation, raw=True)
            if stored is not None:
                return replace(stored, metadata=info.metadata)
            if generation is not None:
                return None  # the pinned generation is gone
            # replaced between the metadata and the bytes: read the newer one
        raise ConcurrentUpdateError(f"{self.uri(name)} kept changing while being read")

    def read_model(self, name: str, model: type[ModelT]) -> tuple[ModelT, int] | None:
        """Parse a JSON object into ``model``; None if the object does not exist."""
        stored = self.read(name)
        if stored is None:
            return None
        return model.model_validate_json(stored.data), stored.generation

    def stat(self, name: str, *, generation: int | None = None) -> ObjectInfo | None:
        """The object's metadata (custom metadata included), or None if it does not exist."""
        blob = self._bucket.blob(name, generation=generation)
        try:
            with transient_errors(f"reading {self.uri(name)}"):
                blob.reload()
        except gexc.NotFound:
            return None
        return ObjectInfo(
            name=name,
            generation=int(blob.generation or 0),
            size=int(blob.size or 0),
            updated=blob.updated,
            metadata=dict(blob.metadata or {}),
            content_encoding=blob.content_encoding or "",
        )

    def open_read(
        self, name: str, *, generation: int | None = None, chunk_size: int = READ_CHUNK_BYTES
    ) -> AbstractContextManager[BinaryIO]:
        """Stream the object's bytes as stored (``chunk_size`` per request), never
        holding them all; a gzip ``Content-Encoding`` is not undone (as ``read``).

        Errors surface while reading (NotFound once a pinned generation is gone).
        """
        blob = self._bucket.blob(name, generation=generation)

        @contextmanager
        def reader() -> Iterator[BinaryIO]:
            with blob.open("rb", chunk_size=chunk_size, raw_download=True) as stream:
                yield stream

        return reader()

    def list_names(
        self, prefix: str, *, start_offset: str | None = None, max_results: int | None = None
    ) -> Iterator[str]:
        for info in self.list_objects(prefix, start_offset=start_offset, max_results=max_results):
            yield info.name

    def list_objects(
        self, prefix: str, *, start_offset: str | None = None, max_results: int | None = None
    ) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in lexicographic order (``objects.list``): from
        ``start_offset`` on (inclusive) when given, at most ``max_results`` of them."""
        options: dict[str, Any] = {}
        if start_offset is not None:
            options["start_offset"] = start_offset
        if max_results is not None:
            options["max_results"] = max_results
        with transient_errors(f"listing {self.uri(prefix)}"):
            for blob in self._bucket.client.list_blobs(self._bucket, prefix=prefix, **options):
                yield ObjectInfo(
                    name=blob.name,
                    generation=int(blob.generation or 0),
                    size=int(blob.size or 0),
                    updated=blob.updated,
                    content_encoding=blob.content_encoding or "",
                )

    # -- writing --------------------------------------------------------------------------

    def write(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> int | None:
        """Write ``data``; with ``if_generation_match`` the write is conditional.

        Returns the new generation, or None when the precondition failed (the object
        exists for ``if_generation_match=0``, or changed since that generation).
        ``metadata`` is stored as the object's custom metadata. ``retry=False`` tries
        once (a 429 raises TransientError at once: for a writer that then gives way).
        """
        blob = self._bucket.blob(name)
        if metadata is not None:
            blob.metadata = dict(metadata)
        options: dict[str, Any] = {}
        if not retry:
            options["retry"] = None
        elif if_generation_match is None:
            options["retry"] = RATE_LIMITED_RETRY
        try:
            with transient_errors(f"writing {self.uri(name)}"):
                blob.upload_from_string(
                    data,
                    content_type=content_type,
                    if_generation_match=if_generation_match,
                    **options,
                )
        except gexc.PreconditionFailed:
            return None
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

    def copy(
        self,
        name: str,
        destination: ArtifactStore,
        new_name: str,
        *,
        generation: int | None = None,
    ) -> int | None:
        """Copy the object (server side) to ``new_name`` in ``destination``'s bucket.

        Returns the copy's generation, or None when the source (at ``generation``, if
        given) does not exist.
        """
        source = self._bucket.blob(name)
        try:
            with transient_errors(f"copying {self.uri(name)} to {destination.uri(new_name)}"):
                copied = self._bucket.copy_blob(
                    source, destination._bucket, new_name, source_generation=generation
                )
        except gexc.NotFound:
            return None
        return int(copied.generation or 0)

    def delete(self, name: str, *, if_generation_match: int | None = None) -> bool:
        """Delete; False when it was already gone or the precondition failed."""
        try:
            with transient_errors(f"deleting {self.uri(name)}"):
                self._bucket.blob(name).delete(if_generation_match=if_generation_match)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return False
        return True

    # -- read-modify-write ----------------------------------------------------------------

    @overload
    def update(
        self,
        name: str,
        codec: type[ModelT],
        change: Callable[[ModelT | None], ModelT],
        *,
        max_attempts: int | None = None,
    ) -> Updated[ModelT]: ...

    @overload
    def update(
        self,
        name: str,
        codec: type[ModelT],
        change: Callable[[ModelT | None], ModelT | None],
        *,
        max_attempts: int | None = None,
    ) -> Updated[ModelT | None]: ...

    @overload
    def update(
        self,
        name: str,
        codec: Codec[ValueT],
        change: Callable[[ValueT | None], ValueT],
        *,
        max_attempts: int | None = None,
    ) -> Updated[ValueT]: ...

    @overload
    def update(
        self,
        name: str,
        codec: Codec[ValueT],
        change: Callable[[ValueT | None], ValueT | None],
        *,
        max_attempts: int | None = None,
    ) -> Updated[ValueT | None]: ...

    def update(
        self,
        name: str,
        codec: type[BaseModel] | Codec[Any],
        change: Callable[[Any], Any],
        *,
        max_attempts: int | None = None,
    ) -> Updated[Any]:
        """Read-modify-write ``name`` under a generation precondition.

        ``codec`` is a pydantic model class (the object is its JSON) or a ``Codec``.
        ``change`` gets the current value (None when there is no object) and returns the
        new one, or None to keep the object as it is; returning a value that encodes to
        the stored bytes writes nothing either. Absent objects are created (precondition
        "does not exist"). ``change`` runs again on the newer value each time another
        writer wins the race, so it must not have side effects beyond the value it is
        given; after ``max_attempts`` lost races (default: the store's
        ``update_attempts``) ConcurrentUpdateError is raised.
        """
        values: Codec[Any] = (
            JsonModel(codec) if isinstance(codec, type) and issubclass(codec, BaseModel) else codec
        )
        attempts = self.update_attempts if max_attempts is None else max_attempts
        for _ in range(attempts):
            stored = self.read(name, metadata=values.reads_metadata)
            current = None if stored is None else values.decode(stored)
            generation = 0 if stored is None else stored.generation
            wanted = change(current)
            if wanted is None:
                return Updated(current, generation, written=False)
            payload = values.encode(wanted)
            if stored is not None and _same(stored, payload):
                return Updated(wanted, generation, written=False)
            written = self.write(
                name,
                payload.data,
                content_type=payload.content_type,
                metadata=payload.metadata,
                if_generation_match=generation,
            )
            if written is not None:
                return Updated(wanted, written, written=True)
        raise ConcurrentUpdateError(f"{self.uri(name)}: lost {attempts} update races")


def _same(stored: StoredObject, payload: Payload) -> bool:
    """Whether writing ``payload`` would leave ``stored`` as it is."""
    if payload.data != stored.data:
        return False
    return payload.metadata is None or dict(payload.metadata) == dict(stored.metadata)
