"""The part of ``google.cloud.storage`` Cascade uses, as protocols.

``google-cloud-storage`` ships no type information, so ``storage.Client`` is ``Any`` to
mypy. These protocols name what the code that takes a client (``ArtifactStore``,
``BaselineStore``, the validate step, ``GcsObjectOpener``) calls on it, so a test fake
(``tests/unit/validation/fake_storage.py``) is checked against the same interface the
real client is: mypy checks the fake; ``tests/unit/test_protocols.py`` checks the real
``Client``, ``Bucket`` and ``Blob`` signatures at run time.

Only what the code calls is here; keyword arguments are keyword-only and the object
names positional-only, because that is how the code calls them (the real parameter
names differ from the fakes': ``blob_name``, ``bucket_name``, ``bucket_or_name``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import BinaryIO, Protocol

__all__ = ["StorageBlob", "StorageBucket", "StorageClient"]


class StorageBlob(Protocol):
    """An object of a bucket, optionally pinned to one generation."""

    # Settable: the metadata given here is written with the next upload.
    metadata: dict[str, str] | None
    # Settable too; after a read or reload, the object's (``gzip``: stored compressed).
    content_encoding: str | None

    @property
    def name(self) -> str: ...

    @property
    def generation(self) -> int | None:
        """The pinned generation; after a read, reload or upload, the one read or written."""
        ...

    @property
    def size(self) -> int | None: ...

    @property
    def updated(self) -> datetime | None: ...

    def reload(self) -> None:
        """Fetch the object's metadata; ``NotFound`` when it (or its generation) is gone."""
        ...

    def download_as_bytes(self, *, raw_download: bool = False) -> bytes:
        """``raw_download``: the bytes as stored (a gzip ``Content-Encoding`` kept)."""
        ...

    def open(
        self, mode: str, *, chunk_size: int | None = None, raw_download: bool = False
    ) -> BinaryIO:
        """A streaming reader (``mode="rb"``)."""
        ...

    def upload_from_string(
        self,
        data: bytes | str,
        *,
        content_type: str = ...,
        if_generation_match: int | None = None,
    ) -> None:
        """Write; ``PreconditionFailed`` unless the current generation is
        ``if_generation_match`` (0: the object must not exist)."""
        ...

    def delete(self, *, if_generation_match: int | None = None) -> None: ...


class StorageBucket(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def client(self) -> StorageClient: ...

    def blob(self, blob_name: str, /, *, generation: int | None = None) -> StorageBlob: ...

    def get_blob(self, blob_name: str, /) -> StorageBlob | None:
        """The object with its metadata loaded, or None when it does not exist."""
        ...

    def copy_blob(
        self,
        blob: StorageBlob,
        destination_bucket: StorageBucket,
        new_name: str,
        *,
        source_generation: int | None = None,
    ) -> StorageBlob:
        """A server-side copy of ``blob`` (of this bucket) to ``destination_bucket``."""
        ...


class StorageClient(Protocol):
    def bucket(self, bucket_name: str, /) -> StorageBucket: ...

    def list_blobs(
        self,
        bucket: StorageBucket,
        /,
        *,
        prefix: str = ...,
        start_offset: str | None = ...,
        max_results: int | None = ...,
    ) -> Iterable[StorageBlob]:
        """The bucket's objects under ``prefix`` in lexicographic order, with their
        metadata loaded: from ``start_offset`` on (inclusive), at most ``max_results``."""
        ...
