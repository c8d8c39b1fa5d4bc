"""The Dataflow workers' account and the Beam launchers' grants (infra/dataflow.tf).

Terraform evaluates the grants (tests/infra/terraform_eval.py) with the repository's
topology, and with a copy in which a function launches Beam jobs (``act_as:
[dataflow-workers]``): the workers hold exactly their topology access, the artifacts
write narrowed to ``dataflow/``, plus the image read; a launcher gets
the launcher custom role (create, get, list jobs) and actAs on the workers' account
only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade.core.settings import Settings
from cascade.core.topology import Topology, load_topology, parse_topology
from cascade.jobs.dataflow_runner import TEMPLATE_SPEC, WORKERS_ACCOUNT_ID, DataflowLayout
from tests.infra.terraform_eval import EvaluatedInfra, evaluate_infra, iter_grants, load_infra, ref

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
TOPOLOGY = INFRA_DIR / "topology.yaml"
PROJECT = "cascade-test"
WORKERS = "google_service_account.dataflow_workers"
FUNCTION_ACCOUNT = "google_service_account.function"
LAUNCHER = "validate"
LAUNCHER_ROLE = ref("google_project_iam_custom_role.dataflow_launcher", "id")

pytestmark = pytest.mark.infra


def _evaluate(workdir: Path, topology_path: Path) -> EvaluatedInfra:
    infra = load_infra(INFRA_DIR)
    topology = load_topology(topology_path)
    manifest = workdir / "manifest.json"
    packages = {name: {"zip": f"{name}.zip", "sha256": "0" * 64} for name in topology.functions}
    manifest.write_text(json.dumps({"functions": packages}), encoding="utf-8")
    return evaluate_infra(
        workdir,
        infra,
        {
            "project_id": PROJECT,
            "topology_path": str(topology_path),
            "function_packages_manifest": str(manifest),
        },
        addresses=infra.resources_of(lambda kind: kind.endswith("_iam_member")),
        local_names=("topology_buckets", "dataflow_launchers"),
    )


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> EvaluatedInfra:
    return _evaluate(tmp_path_factory.mktemp("dataflow-repo"), TOPOLOGY)


@pytest.fixture(scope="module")
def not_launching(tmp_path_factory: pytest.TempPathFactory) -> EvaluatedInfra:
    """The topology with validate not launching Beam jobs."""
    document = yaml.safe_load(TOPOLOGY.read_text(encoding="utf-8"))
    access = document["functions"][LAUNCHER]["access"]
    access["act_as"] = [name for name in access["act_as"] if name != "dataflow-workers"]
    parse_topology(document)  # still a valid topology
    workdir = tmp_path_factory.mktemp("dataflow-launcher")
    path = workdir / "topology.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return _evaluate(workdir, path)


def _grants(evaluated: EvaluatedInfra, member: str) -> list[dict[str, Any]]:
    found = []
    for address, _, body in iter_grants(evaluated):
        if body["member"] != member:
            continue
        target = next(
            body[f]
            for f in ("bucket", "service_account_id", "repository", "project", "topic")
            if f in body
        )
        found.append(
            {
                "at": address,
                "target": target,
                "role": body["role"],
                "condition": body.get("condition") or [],
            }
        )
    return found


def _held(evaluated: EvaluatedInfra, member: str) -> set[tuple[str, str]]:
    return {(grant["target"], grant["role"]) for grant in _grants(evaluated, member)}


def test_the_workers_hold_exactly_their_topology_access_and_the_image_read(
    repository: EvaluatedInfra,
) -> None:
    topology: Topology = load_topology(TOPOLOGY)
    access = topology.service_accounts["dataflow-workers"].access
    buckets = repository.locals["topology_buckets"]
    expected = {(PROJECT, role) for api in access.apis for role in topology.apis[api].roles}
    expected |= {(buckets[b], "roles/storage.objectViewer") for b in access.read}
    expected |= {(buckets[b], "roles/storage.objectUser") for b in access.write}
    expected.add(
        (ref("google_artifact_registry_repository.images", "name"), "roles/artifactregistry.reader")
    )

    held = _held(repository, ref(WORKERS, "member"))

    assert held == expected
    assert (PROJECT, "roles/dataflow.worker") in held
    assert not access.publish


def test_the_workers_write_only_under_the_dataflow_prefix(repository: EvaluatedInfra) -> None:
    artifacts = repository.locals["topology_buckets"]["artifacts"]
    writes = [
        grant
        for grant in _grants(repository, ref(WORKERS, "member"))
        if grant["role"] == "roles/storage.objectUser"
    ]

    assert [grant["target"] for grant in writes] == [artifacts]
    (condition,) = writes[0]["condition"]
    assert (
        f'resource.name.startsWith("projects/_/buckets/{artifacts}/objects/dataflow/")'
        in condition["expression"]
    )


def test_the_launchers_are_the_functions_that_reach_a_beam_route(
    repository: EvaluatedInfra,
) -> None:
    """validate launches a big file's Beam job, transform a big snapshot's split;
    reconcile runs validate for a landed file without a run. Nothing else holds the
    launcher role or Dataflow's developer."""
    assert sorted(repository.locals["dataflow_launchers"]) == ["reconcile", "transform", "validate"]
    launchers = {
        grant["member"]
        for _, _, grant in iter_grants(repository)
        if grant["role"] in (LAUNCHER_ROLE, "roles/dataflow.developer")
    }
    assert launchers == {
        ref(FUNCTION_ACCOUNT, "member", fn) for fn in ("reconcile", "transform", "validate")
    }


def test_a_launcher_gets_the_launcher_role_and_acts_as_the_workers_only(
    not_launching: EvaluatedInfra, repository: EvaluatedInfra
) -> None:
    member = ref(FUNCTION_ACCOUNT, "member", LAUNCHER)

    added = _held(repository, member) - _held(not_launching, member)

    assert sorted(not_launching.locals["dataflow_launchers"]) == ["reconcile", "transform"]
    assert added == {
        (PROJECT, LAUNCHER_ROLE),
        (ref(WORKERS, "name"), "roles/iam.serviceAccountUser"),
    }


def test_the_runner_launches_as_the_account_terraform_creates() -> None:
    """Terraform's name_prefix is every function's CASCADE_TOPIC_PREFIX (variables.tf)."""
    settings = Settings(project=PROJECT, artifacts_bucket="acme-art", topic_prefix="acme-")
    infra_text = (INFRA_DIR / "dataflow.tf").read_text(encoding="utf-8")

    layout = DataflowLayout.from_settings(settings)

    assert layout.workers_account == f"acme-{WORKERS_ACCOUNT_ID}@{PROJECT}.iam.gserviceaccount.com"
    assert f'dataflow_workers        = "{WORKERS_ACCOUNT_ID}"' in infra_text
    assert 'account_id   = "${var.name_prefix}${local.dataflow_workers}"' in infra_text
    assert layout.template_spec_uri == f"gs://acme-art/{TEMPLATE_SPEC}"
    assert TEMPLATE_SPEC.startswith("dataflow/")
    assert layout.temp_location.startswith("gs://acme-art/dataflow/")
    assert layout.staging_location.startswith("gs://acme-art/dataflow/")


def test_the_launcher_role_creates_and_reads_jobs_only() -> None:
    infra = load_infra(INFRA_DIR)
    role = infra.resources["google_project_iam_custom_role.dataflow_launcher"]

    assert sorted(role["permissions"]) == [
        "dataflow.jobs.create",
        "dataflow.jobs.get",
        "dataflow.jobs.list",
    ]
