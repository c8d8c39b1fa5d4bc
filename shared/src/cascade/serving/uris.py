"""Reading objects and model directories by URI: ``gs://bucket/name`` or a local path.

``gs://`` goes through an ``ArtifactStore`` per bucket (the artifacts bucket's own store
when it is that bucket). Object names are data: a directory tree is mirrored only after
each relative name is checked to be a plain relative path.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from cascade.core.errors import BadInputError
from cascade.core.store import ArtifactStore

__all__ = ["UriReader", "split_gcs_uri"]


def split_gcs_uri(uri: str) -> tuple[str, str]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not uri.startswith("gs://") or not bucket:
        raise BadInputError(f"not a gs:// URI with a bucket: {uri!r}")
    return bucket, name


def _safe_parts(name: str) -> tuple[str, ...]:
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        raise BadInputError(f"refusing to mirror object name {name!r} into a local directory")
    return PurePosixPath(name).parts


class UriReader:
    def __init__(self, store_for_bucket: Callable[[str], ArtifactStore]) -> None:
        self._store_for_bucket = store_for_bucket
        self._stores: dict[str, ArtifactStore] = {}

    @classmethod
    def beside(cls, artifacts: ArtifactStore, other: Callable[[str], ArtifactStore]) -> UriReader:
        """``artifacts`` for its own bucket, ``other(bucket)`` for any other."""
        return cls(lambda bucket: artifacts if bucket == artifacts.bucket_name else other(bucket))

    def _store(self, bucket: str) -> ArtifactStore:
        if bucket not in self._stores:
            self._stores[bucket] = self._store_for_bucket(bucket)
        return self._stores[bucket]

    def read_bytes(self, uri: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        if not uri.startswith("gs://"):
            path = Path(uri)
            return path.read_bytes() if path.is_file() else None
        bucket, name = split_gcs_uri(uri)
        stored = self._store(bucket).read(name)
        return None if stored is None else stored.data

    def download_tree(self, uri: str, local_dir: Path) -> Path:
        """Mirror the files below ``uri`` into ``local_dir``; BadInputError when none."""
        if not uri.startswith("gs://"):
            source = Path(uri)
            if not source.is_dir():
                raise BadInputError("no such model directory", uri=uri)
            shutil.copytree(source, local_dir)
            return local_dir
        bucket, prefix = split_gcs_uri(uri.rstrip("/"))
        prefix = f"{prefix}/" if prefix else ""
        store = self._store(bucket)
        names = list(store.list_names(prefix))
        if not names:
            raise BadInputError("no objects under this directory", uri=uri)
        for name in names:
            stored = store.read(name)
            if stored is None:
                raise BadInputError(f"{name} vanished while downloading", uri=uri)
            target = local_dir.joinpath(*_safe_parts(name[len(prefix) :]))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(stored.data)
        return local_dir
