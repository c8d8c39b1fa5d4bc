"""Permissions come from the topology: Terraform's grants, the code's needs, both ways.

* The grants infra/iam.tf derives (the text between ``# BEGIN derived grants`` and
  ``# END derived grants``, which depends only on the topology and variables) are
  evaluated by Terraform itself on a provider-less copy (``terraform apply`` of locals
  and outputs needs no provider download) and compared, as values, with each function's
  ``access`` in infra/topology.yaml.
* The topics a function's code can publish on (tests/infra/publish_closure.py: the
  StepMessage subclasses constructed in what its entry point reaches) must be granted,
  and every granted topic must be one the code can publish on (no unused grant).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade.core import messages
from cascade.core.topology import INVOKER_GROUPS, Topology, load_topology, parse_topology
from tests.infra.import_closure import SourceTree
from tests.infra.publish_closure import PublishAnalysis

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
TOPOLOGY = INFRA_DIR / "topology.yaml"
SOURCE_ROOT = REPO_ROOT / "shared" / "src"

pytestmark = pytest.mark.infra

MESSAGE_TOPICS = {
    cls.__name__: cls.TOPIC
    for cls in vars(messages).values()
    if isinstance(cls, type) and isinstance(getattr(cls, "TOPIC", None), str)
}
"""Every message model with a topic (the run chain's, BatchPredictRequest, RunEnded...)."""
REPUBLISHED_TOPICS = frozenset(cls.TOPIC for cls in messages.MESSAGE_TYPES.values())
"""What reconcile may republish by type name: the run chain's messages."""
# The trainer (cascade.trainer.task.main) runs as the Vertex AI jobs' account.
TRAINER = ("cascade.trainer.task", "main")
# The Beam pipeline (cascade.beam.pipeline.main) runs as the Dataflow workers' account.
BEAM_PIPELINE = ("cascade.beam.pipeline", "main")


def derived_grants_text() -> str:
    text = (INFRA_DIR / "iam.tf").read_text(encoding="utf-8")
    match = re.search(r"# BEGIN derived grants\n(.*)# END derived grants", text, re.S)
    assert match, "infra/iam.tf lost its derived-grants markers"
    return match.group(1)


_OUTPUTS = (
    "function_access",
    "vertex_jobs_access",
    "function_bucket_grants",
    "function_topic_grants",
    "function_project_grants",
    "function_act_as_grants",
    "job_submitters",
    "http_invoker_grants",
)


def evaluate_grants(
    workdir: Path, topology: Path, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The derived-grants locals of iam.tf, as Terraform computes them for ``topology``."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    variables = {
        "train_http_invokers": [],
        "bless_http_invokers": [],
        "review_http_invokers": [],
        "endpoint_service_account": None,
        **(variables or {}),
    }
    declarations = "\n".join(
        f'variable "{name}" {{\n  default = null\n}}' for name in sorted(variables)
    )
    outputs = "\n".join(f'output "{name}" {{\n  value = local.{name}\n}}' for name in _OUTPUTS)
    (workdir / "main.tf").write_text(
        f'locals {{\n  topology = yamldecode(file("{topology}"))\n}}\n'
        f"{declarations}\n{derived_grants_text()}\n{outputs}\n",
        encoding="utf-8",
    )
    (workdir / "terraform.tfvars.json").write_text(json.dumps(variables), encoding="utf-8")
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    for command in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        done = subprocess.run(
            [terraform, f"-chdir={workdir}", *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run(
        [terraform, f"-chdir={workdir}", "output", "-json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return {name: entry["value"] for name, entry in json.loads(shown.stdout).items()}


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(TOPOLOGY)


@pytest.fixture(scope="module")
def grants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return evaluate_grants(
        tmp_path_factory.mktemp("grants"),
        TOPOLOGY,
        {
            "train_http_invokers": ["group:retrainers@example.com"],
            "bless_http_invokers": ["user:lead@example.com"],
            "review_http_invokers": ["group:stewards@example.com"],
            "endpoint_service_account": "serving@p.iam.gserviceaccount.com",
        },
    )


# ------------------------------------------------------------------ Terraform = topology


def test_topic_grants_are_the_declared_publish_lists(
    grants: dict[str, Any], topology: Topology
) -> None:
    granted = {(g["fn"], g["topic"]) for g in grants["function_topic_grants"].values()}
    declared = {
        (name, topic) for name, spec in topology.functions.items() for topic in spec.access.publish
    }
    assert granted == declared


def test_bucket_grants_are_the_declared_reads_and_writes(
    grants: dict[str, Any], topology: Topology
) -> None:
    granted = {(g["fn"], g["bucket"], g["role"]) for g in grants["function_bucket_grants"].values()}
    declared = (
        {
            (name, bucket, "roles/storage.objectViewer")
            for name, spec in topology.functions.items()
            for bucket in spec.access.read
        }
        | {
            (name, bucket, "roles/storage.objectUser")
            for name, spec in topology.functions.items()
            for bucket in spec.access.write
        }
        | {
            (name, bucket, "roles/storage.objectCreator")
            for name, spec in topology.functions.items()
            for bucket in spec.access.create
        }
    )
    assert granted == declared


def test_project_roles_are_the_roles_of_the_declared_apis(
    grants: dict[str, Any], topology: Topology
) -> None:
    granted = {(g["fn"], g["role"]) for g in grants["function_project_grants"].values()}
    declared = {
        (name, role)
        for name, spec in topology.functions.items()
        for api in spec.access.apis
        for role in topology.apis[api].roles
    }
    assert granted == declared


def test_act_as_grants_follow_the_declarations(grants: dict[str, Any], topology: Topology) -> None:
    granted = {(g["fn"], g["account"]) for g in grants["function_act_as_grants"].values()}
    declared = {
        (name, account)
        for name, spec in topology.functions.items()
        for account in spec.access.act_as
    }
    assert granted == declared
    assert set(grants["job_submitters"]) == {
        name for name, spec in topology.functions.items() if "vertex-jobs" in spec.access.act_as
    }


def test_deploy_acts_as_the_endpoint_account_only_when_one_is_set(tmp_path: Path) -> None:
    unset = evaluate_grants(tmp_path, TOPOLOGY)

    assert ("deploy", "endpoint") not in {
        (g["fn"], g["account"]) for g in unset["function_act_as_grants"].values()
    }


def test_the_vertex_jobs_account_gets_its_declared_access(
    grants: dict[str, Any], topology: Topology
) -> None:
    access = topology.service_accounts["vertex-jobs"].access
    derived = grants["vertex_jobs_access"]

    assert derived["publish"] == list(access.publish)
    assert derived["write"] == list(access.write)
    assert derived["read"] == list(access.read)
    assert set(derived["roles"]) == {r for api in access.apis for r in topology.apis[api].roles}


def test_each_http_function_has_its_own_invoker_list(
    grants: dict[str, Any], topology: Topology
) -> None:
    granted = {(g["fn"], g["member"]) for g in grants["http_invoker_grants"].values()}

    assert granted == {
        ("train-http", "group:retrainers@example.com"),
        ("evaluate-http", "user:lead@example.com"),
        ("review-http", "group:stewards@example.com"),
    }
    assert topology.functions["train-http"].invokers == "retrain"
    assert topology.functions["evaluate-http"].invokers == "bless"
    assert topology.functions["review-http"].invokers == "review"
    assert {"retrain", "bless", "review"} == set(INVOKER_GROUPS)


def test_a_dropped_declaration_drops_the_grant(tmp_path: Path) -> None:
    document = yaml.safe_load(TOPOLOGY.read_text(encoding="utf-8"))
    document["functions"]["evaluate-job-events"]["access"]["publish"].remove("model-trained")
    variant = tmp_path / "topology.yaml"
    variant.write_text(yaml.safe_dump(document), encoding="utf-8")
    (tmp_path / "tf").mkdir()

    granted = evaluate_grants(tmp_path / "tf", variant)["function_topic_grants"]

    assert "evaluate-job-events:model-trained" not in granted
    assert "evaluate-job-events:train-requests" in granted


# ------------------------------------------------------------------ code = topology


@cache
def _analysis() -> PublishAnalysis:
    return PublishAnalysis(SourceTree(SOURCE_ROOT), MESSAGE_TOPICS, REPUBLISHED_TOPICS)


def code_topics(topology: Topology, name: str) -> dict[str, set[tuple[str, str]]]:
    """topic -> where the code reachable from identity ``name`` constructs its message."""
    if name == "vertex-jobs":
        return _analysis().topics_of_function(*TRAINER)
    if name == "dataflow-workers":
        return _analysis().topics_of_function(*BEAM_PIPELINE)
    spec = topology.functions[name]
    return _analysis().topics_of(REPO_ROOT / spec.source / "main.py", spec.entry_point)


def _grant_report(topology: Topology) -> tuple[list[str], list[str]]:
    missing: list[str] = []
    unused: list[str] = []
    for name, access in topology.identities().items():
        found = code_topics(topology, name)
        for topic in sorted(set(found) - set(access.publish)):
            where = ", ".join(
                sorted(f"{module}.{definition}" for module, definition in found[topic])
            )
            missing.append(f"{name} publishes {topic} ({where}) but is not granted it")
        for topic in sorted(set(access.publish) - set(found)):
            unused.append(f"{name} is granted {topic} but its code never publishes it")
    return missing, unused


def test_every_topic_the_code_publishes_on_is_granted(topology: Topology) -> None:
    missing, _ = _grant_report(topology)
    assert missing == []


def test_no_identity_holds_a_publish_grant_it_never_uses(topology: Topology) -> None:
    _, unused = _grant_report(topology)
    assert unused == []


def test_the_check_catches_a_dropped_grant() -> None:
    document = yaml.safe_load(TOPOLOGY.read_text(encoding="utf-8"))
    document["functions"]["evaluate-job-events"]["access"]["publish"].remove("model-trained")

    missing, _ = _grant_report(parse_topology(document))

    assert len(missing) == 1
    assert missing[0].startswith("evaluate-job-events publishes model-trained")
    assert "cascade.steps.training_job._best_trial_model" in missing[0]


def test_tuning_best_trial_and_follow_up_requests_are_granted(topology: Topology) -> None:
    """Finding (2): a tuning job's best trial is announced by evaluate-job-events.
    Finding (3): train and train-http publish the follow-up train request."""
    assert "model-trained" in topology.functions["evaluate-job-events"].access.publish
    for name in ("train", "train-http", "evaluate-job-events"):
        assert "train-requests" in topology.functions[name].access.publish, name
    assert set(topology.functions["train"].access.publish) == {
        "train-requests",
        "alerts",
        "run-ended",
    }
    assert set(topology.functions["evaluate"].access.publish) == {
        "model-blessed",
        "alerts",
        "run-ended",
    }
