"""Each local function is started with its own topology entry's Cloud Run limits: the
request timeout, the memory and the maximum instances (one request each), as Terraform
deploys them (infra/functions.tf), so none runs more leniently here than there."""

from __future__ import annotations

from pathlib import Path

from cascade.core.topology import load_topology
from cascade.localcloud.components import function_specs
from cascade.localcloud.local_settings import LocalCloudSettings

REPO_ROOT = Path(__file__).resolve().parents[3]


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_every_function_host_gets_its_entry_s_timeout_memory_and_instances(
    tmp_path: Path,
) -> None:
    topology = load_topology(REPO_ROOT / "infra" / "topology.yaml")
    local = LocalCloudSettings(state_dir=tmp_path / "state", repo_root=REPO_ROOT)

    specs = {spec.name: spec for spec in function_specs(local, topology, {})}

    assert set(specs) == {f"function:{name}" for name in topology.functions}
    for name, function in topology.functions.items():
        argv = specs[f"function:{name}"].argv
        assert argv[1:3] == ["-m", "cascade.localcloud.function_host"], name
        assert _flag(argv, "--timeout-s") == str(function.timeout_s), name
        assert _flag(argv, "--memory") == function.memory, name
        assert _flag(argv, "--max-instances") == str(function.max_instances), name
    # The entries differ, so a flag taken from anywhere but the entry shows above.
    assert len({function.max_instances for function in topology.functions.values()}) > 1
