"""Reading and writing the trainer's inputs and outputs by URI.

``gs://bucket/name`` goes through an ``ArtifactStore`` per bucket (the real client, or in
unit tests ``cascade.core.fakes.MemoryArtifactStore``); anything else is a local path, for
local runs and benchmarks. Object names are data: a downloaded object gets a local name
the caller chooses, and a directory tree is only mirrored after each relative name is
checked to be a plain relative path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import google.cloud.storage as storage

from cascade.core.errors import BadInputError
from cascade.core.store import ArtifactStore

__all__ = ["TrainerStorage", "is_gcs_uri", "join_uri", "split_gcs_uri"]


def is_gcs_uri(uri: str) -> bool:
    return uri.startswith("gs://")


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → ``("bucket", "a/b")``."""
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise BadInputError(f"not a gs:// URI with a bucket: {uri!r}")
    return bucket, name


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _safe_relative(name: str) -> PurePosixPath:
    relative = PurePosixPath(name)
    if (
        not name
        or relative.is_absolute()
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise BadInputError(f"refusing to mirror object name {name!r} into a local directory")
    return relative


class TrainerStorage:
    """URI-level reads and writes over one ``ArtifactStore`` per bucket."""

    def __init__(self, store_for_bucket: Callable[[str], ArtifactStore]) -> None:
        self._store_for_bucket = store_for_bucket
        self._stores: dict[str, ArtifactStore] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_client_factory(cls, make_client: Callable[[], storage.Client]) -> TrainerStorage:
        """Real Cloud Storage; the client is created on the first gs:// access, so a run on
        local paths needs no credentials."""
        clients: list[storage.Client] = []

        def store_for_bucket(bucket: str) -> ArtifactStore:
            if not clients:
                clients.append(make_client())
            return ArtifactStore(clients[0], bucket)

        return cls(store_for_bucket)

    def _store(self, bucket: str) -> ArtifactStore:
        with self._lock:
            if bucket not in self._stores:
                self._stores[bucket] = self._store_for_bucket(bucket)
            return self._stores[bucket]

    def read_bytes(self, uri: str, *, generation: int | None = None) -> bytes:
        """The object's bytes (of ``generation`` when given); BadInputError when it does
        not exist."""
        if not is_gcs_uri(uri):
            try:
                return Path(uri).read_bytes()
            except FileNotFoundError:
                raise BadInputError("does not exist", uri=uri) from None
        bucket, name = split_gcs_uri(uri)
        stored = self._store(bucket).read(name, generation=generation)
        if stored is None:
            where = uri if generation is None else f"{uri}#{generation}"
            raise BadInputError("does not exist", uri=where)
        return stored.data

    def write_bytes(
        self, uri: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        if not is_gcs_uri(uri):
            path = Path(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        bucket, name = split_gcs_uri(uri)
        self._store(bucket).write(name, data, content_type=content_type)

    def download_file(self, uri: str, local_path: Path) -> Path:
        local_path.parent.mkdir(parents=True, exist_ok=True)
        local_path.write_bytes(self.read_bytes(uri))
        return local_path

    def list_tree(self, uri: str) -> list[str]:
        """Names below ``uri`` (a directory), relative to it, sorted."""
        if not is_gcs_uri(uri):
            root = Path(uri)
            return sorted(
                path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()
            )
        bucket, prefix = split_gcs_uri(uri.rstrip("/"))
        prefix = f"{prefix}/" if prefix else ""
        return [name[len(prefix) :] for name in self._store(bucket).list_names(prefix)]

    def download_tree(self, uri: str, local_dir: Path) -> Path:
        """Mirror the objects below ``uri`` into ``local_dir``; BadInputError when none."""
        names = self.list_tree(uri)
        if not names:
            raise BadInputError("no objects under this directory", uri=uri)
        for name in names:
            self.download_file(join_uri(uri, name), local_dir.joinpath(*_safe_relative(name).parts))
        return local_dir

    def upload_tree(self, local_dir: Path, uri: str) -> list[str]:
        """Copy every file below ``local_dir`` to ``uri``; returns the URIs written."""
        written = []
        for path in sorted(local_dir.rglob("*")):
            if path.is_file():
                target = join_uri(uri, path.relative_to(local_dir).as_posix())
                self.write_bytes(target, path.read_bytes())
                written.append(target)
        return written
