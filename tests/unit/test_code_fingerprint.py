from __future__ import annotations

from pathlib import Path

from cascade.localcloud.fingerprint import code_fingerprint
from cascade.localcloud.local_settings import LocalCloudSettings


def _local(root: Path) -> LocalCloudSettings:
    (root / "functions" / "validate").mkdir(parents=True)
    (root / "functions" / "validate" / "main.py").write_text("print('v1')\n")
    (root / "topology.yaml").write_text("runtime: python311\n")
    return LocalCloudSettings(repo_root=root, topology_file=root / "topology.yaml")


def test_fingerprint_is_stable_and_follows_function_and_topology_edits(tmp_path: Path) -> None:
    local = _local(tmp_path)
    first = code_fingerprint(local)

    assert code_fingerprint(local) == first
    (tmp_path / "functions" / "validate" / "main.py").write_text("print('v2')\n")
    second = code_fingerprint(local)
    (tmp_path / "topology.yaml").write_text("runtime: python312\n")
    third = code_fingerprint(local)

    assert len({first, second, third}) == 3
