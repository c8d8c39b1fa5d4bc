"""A GCS emulator killed mid-write leaves ``.<name><digits>`` without its metadata; until
it is gone the emulator answers 404 to every listing of that prefix. The supervisor
sweeps such files before the emulator starts or restarts; objects stay."""

from __future__ import annotations

import os
from pathlib import Path

from cascade.localcloud.components import sweep_partial_objects


def _object(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.setxattr(path, "user.metadata", b'{"name": "x"}')
    return path


def test_only_unacknowledged_partial_writes_are_removed(tmp_path: Path) -> None:
    stats = _object(tmp_path / "artifacts" / "runs" / "r1" / "stats.pb")
    partial = stats.with_name(".stats.pb7453614579942069614")
    partial.write_bytes(b"half")
    hidden = _object(tmp_path / "artifacts" / "runs" / "r1" / ".config123")  # an object
    dotted = tmp_path / "artifacts" / ".notes"  # no digits: not the emulator's pattern
    dotted.write_bytes(b"keep")
    binary = tmp_path / ".fake-gcs-server"  # the emulator's own copy at the root
    binary.write_bytes(b"ELF")

    assert sweep_partial_objects(tmp_path) == [partial]
    assert not partial.exists()
    for kept in (stats, hidden, dotted, binary):
        assert kept.exists(), kept
