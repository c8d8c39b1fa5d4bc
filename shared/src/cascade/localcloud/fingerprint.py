"""A fingerprint of the code the local cloud runs, to notice when it changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cascade.localcloud.local_settings import LocalCloudSettings

__all__ = ["code_fingerprint"]


def _code_files(local: LocalCloudSettings) -> list[Path]:
    package = Path(__file__).resolve().parents[1]  # the cascade package actually imported
    files = [*package.rglob("*.py"), local.topology_file]
    files += (local.repo_root / "functions").rglob("*.py")
    return sorted(path for path in files if path.is_file() and "__pycache__" not in path.parts)


def code_fingerprint(local: LocalCloudSettings) -> str:
    """sha256 over the names and contents of the package, the functions and the topology."""
    digest = hashlib.sha256()
    for path in _code_files(local):
        digest.update(str(path).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
