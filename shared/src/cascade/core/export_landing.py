"""Where an ``EXPORT DATA`` job's shards become Cloud Storage objects.

On Google Cloud BigQuery writes the shards into the bucket itself, as the job's caller:
``CloudExportLanding`` has nothing to do. The local BigQuery (bqemulator) cannot reach
the GCS emulator: it maps ``gs://<bucket>/<path>`` to the folder
``<BQEMU_GCS_LOCAL_ROOT>/<bucket>/<path>`` (``local_export_root``, under the local
cloud's state folder). ``LocalExportBridge``, once the job is DONE, uploads each shard of
the export's prefix from that folder into fake-gcs-server with the storage client (as the
function's own identity: a grant the function lacks is refused as Google would refuse
BigQuery's write) and deletes the file: afterwards the objects are where BigQuery would
have written them. It is the only local-only step of an extraction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.core.extraction import SHARD_NAME
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore

__all__ = [
    "CloudExportLanding",
    "ExportLanding",
    "LocalExportBridge",
    "LocalExportSettings",
    "export_landing_for",
    "local_export_root",
]

_PREFIX = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,61}[a-z0-9])/((?:[A-Za-z0-9._=-]+/)+)")


def local_export_root(state_dir: Path) -> Path:
    """The local BigQuery's ``BQEMU_GCS_LOCAL_ROOT`` in the local cloud's state folder."""
    return state_dir / "bigquery" / "gcs"


class ExportLanding(Protocol):
    def land(self, uri_prefix: str) -> None:
        """Make the shards an export wrote under ``uri_prefix`` Cloud Storage objects."""
        ...


class CloudExportLanding:
    """Google Cloud: BigQuery has written the objects already."""

    def land(self, uri_prefix: str) -> None:
        return None


class LocalExportBridge:
    """The local cloud: shards from bqemulator's folder into the GCS emulator."""

    def __init__(self, root: Path, open_store: Callable[[str], ArtifactStore]) -> None:
        self._root = root
        self._open_store = open_store

    def land(self, uri_prefix: str) -> None:
        found = _PREFIX.fullmatch(uri_prefix)
        if found is None or any(part in (".", "..") for part in found.group(2).split("/")):
            raise ValueError(f"not an export prefix: {uri_prefix[:200]!r}")
        bucket, prefix = found.group(1), found.group(2)
        root = self._root.resolve()
        folder = (root / bucket / prefix).resolve()
        if not folder.is_relative_to(root):
            raise ValueError(f"not an export prefix: {uri_prefix[:200]!r}")
        if not folder.is_dir():
            return  # nothing written (or landed already by an earlier call)
        store = self._open_store(bucket)
        for path in sorted(folder.iterdir()):
            if not SHARD_NAME.fullmatch(path.name) or not path.is_file() or path.is_symlink():
                continue
            store.write(
                f"{prefix}{path.name}",
                path.read_bytes(),
                content_type="application/vnd.apache.parquet",
            )
            path.unlink()


class LocalExportSettings(BaseSettings):
    """The local cloud's state folder, which every process it starts is told
    (``CASCADE_LOCAL_STATE_DIR``); unset on Google Cloud."""

    model_config = SettingsConfigDict(env_prefix="CASCADE_LOCAL_", frozen=True, extra="ignore")

    state_dir: Path | None = None


def export_landing_for(
    settings: Settings, open_store: Callable[[str], ArtifactStore]
) -> ExportLanding:
    """The bridge under the local cloud (its BigQuery is bqemulator), else nothing to do."""
    if not settings.bigquery_emulator_host:
        return CloudExportLanding()
    state_dir = LocalExportSettings().state_dir
    if state_dir is None:
        raise RuntimeError(
            "BIGQUERY_EMULATOR_HOST is set but CASCADE_LOCAL_STATE_DIR is not: the local "
            "BigQuery's exports cannot be found"
        )
    return LocalExportBridge(local_export_root(state_dir), open_store)
