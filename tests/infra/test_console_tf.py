"""infra/console.tf, evaluated by Terraform (tests/infra/terraform_eval.py): the console's
Cloud Run service behind IAP, its own least-privilege account, and the role lists the
service checks, which are the HTTP functions' invoker lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cascade.console.cloudrun import CloudConsoleSettings
from cascade.console.roles import Role, RoleMembers
from cascade.core.topology import Topology, load_topology
from tests.infra.import_closure import (
    ModuleImport,
    SourceTree,
    closure,
    external_distributions,
    group_distributions,
    group_requirements,
    iter_sorted,
)
from tests.infra.terraform_eval import (
    EvaluatedInfra,
    InfraConfig,
    evaluate_infra,
    iter_grants,
    load_infra,
    plan_refuses,
    ref,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
TOPOLOGY = INFRA_DIR / "topology.yaml"
PROJECT = "cascade-test"
SERVICE = "google_cloud_run_v2_service.console"
ACCOUNT = ref("google_service_account.console", "member")
PROJECT_NUMBER_STUB = ref("data.google_project.this", "number")
IAP_AGENT = f"serviceAccount:service-{PROJECT_NUMBER_STUB}@gcp-sa-iap.iam.gserviceaccount.com"
MEMBERS = {
    "train_http_invokers": ["user:retrainer@example.com", "group:retrainers@example.com"],
    "bless_http_invokers": ["user:lead@example.com"],
    "review_http_invokers": ["domain:stewards.example.org"],
    "console_viewers": ["user:viewer@example.com"],
}

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(TOPOLOGY)


@pytest.fixture(scope="module")
def infra() -> InfraConfig:
    return load_infra(INFRA_DIR)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-tf")


def _evaluate(workdir: Path, infra: InfraConfig, **variables: Any) -> EvaluatedInfra:
    addresses = [a for a in infra.resources if a.split(".")[1].startswith("console")]
    return evaluate_infra(
        workdir,
        infra,
        {"project_id": PROJECT, "topology_path": str(TOPOLOGY), **variables},
        addresses=addresses,
        local_names=("console_access", "console_roles", "console_role_groups", "topology_buckets"),
    )


@pytest.fixture(scope="module")
def evaluated(workdir: Path, infra: InfraConfig) -> EvaluatedInfra:
    return _evaluate(workdir, infra, **MEMBERS)


def _grants(evaluated: EvaluatedInfra) -> list[dict[str, Any]]:
    return [body | {"at": f"{address}[{key}]"} for address, key, body in iter_grants(evaluated)]


def _service(evaluated: EvaluatedInfra) -> dict[str, Any]:
    return evaluated.resources[SERVICE][""]


def _environment(evaluated: EvaluatedInfra) -> dict[str, str]:
    [template] = _service(evaluated)["template"]
    [container] = template["containers"]
    return {env["name"]: env["value"] for env in container["env"]}


def test_iap_guards_the_service_and_nothing_public_is_granted(evaluated: EvaluatedInfra) -> None:
    service = _service(evaluated)
    grants = _grants(evaluated)

    assert service["iap_enabled"] is True
    assert [g["at"] for g in grants if g["member"].startswith("all")] == []
    invokers = [g for g in grants if g["role"] == "roles/run.invoker"]
    assert [(g["member"], g["name"]) for g in invokers] == [(IAP_AGENT, ref(SERVICE, "name"))]


def test_iap_lets_in_the_invoker_lists_and_the_viewers(evaluated: EvaluatedInfra) -> None:
    accessors = {
        g["member"]
        for g in _grants(evaluated)
        if g["role"] == "roles/iap.httpsResourceAccessor"
        and g["cloud_run_service_name"] == ref(SERVICE, "name")
    }

    assert accessors == {member for members in MEMBERS.values() for member in members}


def test_the_service_account_holds_exactly_what_the_actions_do(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    buckets = evaluated.locals["topology_buckets"]
    evaluate_http = topology.functions["evaluate-http"].access
    review_http = topology.functions["review-http"].access
    publish = {"train-requests", *evaluate_http.publish, *review_http.publish}
    expected = {
        (ref("google_pubsub_topic.this", "id", t), "roles/pubsub.publisher") for t in publish
    }
    expected |= {(buckets[b], "roles/storage.objectViewer") for b in review_http.read}
    expected |= {
        (buckets[b], "roles/storage.objectUser") for b in {*evaluate_http.write, *review_http.write}
    }
    expected |= {(PROJECT, r) for r in topology.apis["vertex-ai-endpoints"].roles}

    held = {
        (g.get("topic") or g.get("bucket") or g.get("project"), g["role"])
        for g in _grants(evaluated)
        if g["member"] == ACCOUNT
    }

    assert held == expected
    # run-ended: a release re-validates, and a validation may end the run (review-http's)
    assert publish == {"train-requests", "model-blessed", "data-validated", "alerts", "run-ended"}
    assert _service(evaluated)["template"][0]["service_account"] == ref(
        "google_service_account.console", "email"
    )


def test_the_local_clouds_console_holds_what_terraform_grants_the_console(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    granted = evaluated.locals["console_access"]
    local = topology.console_access()

    assert list(local.publish) == granted["publish"]
    assert list(local.read) == granted["read"]
    assert list(local.write) == granted["write"]
    assert [role for api in local.apis for role in topology.apis[api].roles] == granted["roles"]
    assert (local.create, local.tables_read, local.tables_write, local.act_as) == ((),) * 4


def test_the_service_learns_the_same_invoker_lists_as_its_roles(evaluated: EvaluatedInfra) -> None:
    environment = _environment(evaluated)

    roles = RoleMembers.model_validate_json(environment["CASCADE_CONSOLE_ROLES"])

    assert roles.members(Role.RETRAIN) == tuple(MEMBERS["train_http_invokers"])
    assert roles.members(Role.BLESS) == tuple(MEMBERS["bless_http_invokers"])
    assert roles.members(Role.REVIEW) == tuple(MEMBERS["review_http_invokers"])
    assert roles.members(Role.DEPLOY) == tuple(MEMBERS["bless_http_invokers"])  # the default
    assert evaluated.locals["console_role_groups"] == ["group:retrainers@example.com"]


def test_the_environment_is_what_the_container_reads(
    evaluated: EvaluatedInfra, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stub's symbolic project number, as the real one is: digits.
    environment = {
        name: value.replace(PROJECT_NUMBER_STUB, "123456789012")
        for name, value in _environment(evaluated).items()
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    settings = CloudConsoleSettings()

    assert settings.iap_audience.endswith("/locations/us-central1/services/cascade-console")
    assert settings.allowed_hosts[0].endswith(".us-central1.run.app")
    assert settings.allowed_hosts[0] == "cascade-console-123456789012.us-central1.run.app"
    assert json.loads(environment["CASCADE_CONSOLE_ALLOWED_HOSTS"]) == list(settings.allowed_hosts)


def test_deploy_approvers_replace_the_bless_list_when_set(
    workdir: Path, infra: InfraConfig, tmp_path: Path
) -> None:
    other = _evaluate(tmp_path, infra, **MEMBERS, deploy_approvers=["user:sre@example.com"])

    roles = RoleMembers.model_validate_json(_environment(other)["CASCADE_CONSOLE_ROLES"])

    assert roles.members(Role.DEPLOY) == ("user:sre@example.com",)
    assert roles.members(Role.BLESS) == tuple(MEMBERS["bless_http_invokers"])


@pytest.mark.parametrize("variable", ["deploy_approvers", "console_viewers"])
def test_public_console_members_are_refused(
    evaluated: EvaluatedInfra, workdir: Path, variable: str
) -> None:
    refusal = plan_refuses(workdir, {"project_id": PROJECT, variable: ["allUsers"]})

    assert "must not contain public principals" in refusal


# ------------------------------------------------------------------ the image

CONSOLE_DOCKERFILE = REPO_ROOT / "shared" / "Dockerfile.console"
PYPROJECT = REPO_ROOT / "shared" / "pyproject.toml"


def _image_groups() -> list[str]:
    [line] = [
        line
        for line in CONSOLE_DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.startswith("ARG DEPENDENCY_GROUPS=")
    ]
    return line.removeprefix("ARG DEPENDENCY_GROUPS=").split(",")


def test_the_console_image_serves_the_cloud_run_entry_point_as_a_non_root_user() -> None:
    text = CONSOLE_DOCKERFILE.read_text(encoding="utf-8")

    assert 'ENTRYPOINT ["python", "-m", "cascade.console.cloudrun"]' in text
    assert "USER console" in text
    assert '--constraint /tmp/constraints.txt "./shared[${DEPENDENCY_GROUPS}]"' in text
    assert "console" in _image_groups()


def test_the_console_image_installs_what_the_console_imports() -> None:
    """Every module ``python -m cascade.console.cloudrun`` can reach, deferred imports
    included (tests/infra/import_closure.py), is provided by the image's groups."""
    tree = SourceTree(REPO_ROOT / "shared" / "src")
    reached = closure(
        tree, [ModuleImport("-m", "cascade.console.cloudrun", False)], follow_deferred=True
    )
    provided: set[str] = set()
    for group in _image_groups():
        provided |= group_distributions(group_requirements(PYPROJECT, group))
    missing = {
        distribution: sorted(iter_sorted(imports))
        for distribution, imports in external_distributions(reached.external).items()
        if distribution not in provided
    }

    assert missing == {}
