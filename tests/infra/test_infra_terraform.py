"""infra/*.tf, parsed with python-hcl2, checked against the topology and the code.

Terraform cannot plan here (no provider download), so these tests read the HCL: the
functions and triggers are generated from topology.yaml with for_each, settings come from
the topology entry, nothing is public, every subscription dead-letters, and each
function runs as its own service account.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest

from cascade.cli.verify_deployment import DeploymentTarget, delivery_for
from cascade.core.grants import INVOKER_ACCOUNT
from cascade.core.settings import Settings
from cascade.core.topology import Topology, load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"

pytestmark = pytest.mark.infra

_OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)


@dataclass
class TerraformConfig:
    """All infra/*.tf files merged: resources by type and name, locals, variables, ..."""

    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)

    def resource(self, resource_type: str, name: str) -> dict[str, Any]:
        return self.resources[resource_type][name]

    def add(self, document: dict[str, Any]) -> None:
        for block in document.get("resource", []):
            for resource_type, named in block.items():
                self.resources.setdefault(resource_type, {}).update(named)
        for block in document.get("data", []):
            for data_type, named in block.items():
                self.data.setdefault(data_type, {}).update(named)
        for block in document.get("locals", []):
            self.locals.update(block)
        for block in document.get("variable", []):
            self.variables.update(block)
        for block in document.get("output", []):
            self.outputs.update(block)
        self.terraform.extend(document.get("terraform", []))


def parse_tf(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        document: dict[str, Any] = hcl2.load(handle, serialization_options=_OPTIONS)
    return document


@pytest.fixture(scope="session")
def terraform() -> TerraformConfig:
    config = TerraformConfig()
    for path in sorted(INFRA_DIR.glob("*.tf")):
        config.add(parse_tf(path))
    return config


@pytest.fixture(scope="session")
def topology() -> Topology:
    return load_topology(INFRA_DIR / "topology.yaml")


def single_block(value: Any) -> dict[str, Any]:
    """A nested block that must appear exactly once (hcl2 gives a list of one)."""
    assert isinstance(value, list), value
    assert len(value) == 1, value
    block = value[0]
    assert isinstance(block, dict)
    return block


def dynamic_block(resource: dict[str, Any], name: str) -> dict[str, Any]:
    """The `dynamic "<name>"` block of a resource (or of a block's content)."""
    for block in resource.get("dynamic", []):
        if name in block:
            found = block[name]
            assert isinstance(found, dict)
            return found
    raise AssertionError(f"no dynamic {name!r} block")


def _every_function_body(terraform: TerraformConfig) -> dict[str, Any]:
    return terraform.resource("google_cloudfunctions2_function", "this")


# ------------------------------------------------------------------ topology -> code


def _defined_functions(main_py: Path) -> set[str]:
    tree = ast.parse(main_py.read_text(encoding="utf-8"), filename=str(main_py))
    return {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_topology_function_has_its_entry_point_in_functions(topology: Topology) -> None:
    missing = []
    for spec in topology.functions.values():
        main_py = REPO_ROOT / spec.source / "main.py"
        if not main_py.is_file():
            missing.append(f"{spec.name}: {spec.source}/main.py does not exist")
        elif spec.entry_point not in _defined_functions(main_py):
            missing.append(f"{spec.name}: {spec.source}/main.py defines no {spec.entry_point}()")
    assert missing == []


def test_function_sources_live_under_functions(topology: Topology) -> None:
    assert all(spec.source.startswith("functions/") for spec in topology.functions.values())


# ------------------------------------------------------------------ topology -> terraform


def test_topology_is_read_with_yamldecode(terraform: TerraformConfig) -> None:
    expression = terraform.locals["topology"]

    assert expression.startswith("${yamldecode(file(")
    assert "topology.yaml" in expression


def test_functions_are_generated_with_for_each_over_the_topology(
    terraform: TerraformConfig,
) -> None:
    assert "in local.topology.functions" in terraform.locals["function_specs"]
    assert "local.topology_defaults" in terraform.locals["function_specs"]
    assert terraform.locals["functions"].startswith("${{for name, spec in local.function_specs")
    assert _every_function_body(terraform)["for_each"] == "${local.functions}"


def test_function_settings_come_from_the_topology_entry(terraform: TerraformConfig) -> None:
    function = _every_function_body(terraform)
    build = single_block(function["build_config"])
    service = single_block(function["service_config"])

    assert build["runtime"] == "${local.topology.runtime}"
    assert build["entry_point"] == "${each.value.entry_point}"
    assert service["available_memory"] == "${each.value.memory}"
    assert service["available_cpu"] == "${each.value.cpu}"
    assert service["timeout_seconds"] == "${each.value.timeout_s}"
    assert service["max_instance_count"] == "${each.value.max_instances}"
    assert service["environment_variables"] == "${local.function_environment[each.key]}"


def test_the_normalized_topology_record_reads_every_field(terraform: TerraformConfig) -> None:
    record = terraform.locals["functions"]
    for field_name in (
        "spec.entry_point",
        "spec.trigger.type",
        "spec.trigger.bucket",
        "spec.trigger.topic",
        "spec.trigger.event_type",
        "spec.retry",
        "spec.dead_letter_topic",
        "spec.timeout_s",
        "spec.memory",
        "spec.cpu",
        "spec.max_instances",
        "spec.max_event_age_s",
    ):
        assert field_name in record, field_name


def test_event_triggers_come_from_the_topology(terraform: TerraformConfig) -> None:
    trigger = dynamic_block(_every_function_body(terraform), "event_trigger")
    content = single_block(trigger["content"])
    bucket_filter = dynamic_block(content, "event_filters")

    assert trigger["for_each"] == '${each.value.delivery == "eventarc" ? [each.value] : []}'
    assert content["event_type"] == "${event_trigger.value.event_type}"
    assert content["retry_policy"] == (
        '${event_trigger.value.retry.policy == "retry" ? '
        '"RETRY_POLICY_RETRY" : "RETRY_POLICY_DO_NOT_RETRY"}'
    )
    assert "google_pubsub_topic.this[event_trigger.value.trigger_topic]" in content["pubsub_topic"]
    assert (
        "local.topology_buckets[event_trigger.value.trigger_bucket]" in (bucket_filter["for_each"])
    )
    assert single_block(bucket_filter["content"])["attribute"] == "bucket"


def test_push_subscriptions_take_trigger_and_retry_policy_from_the_topology(
    terraform: TerraformConfig,
) -> None:
    push = terraform.resource("google_pubsub_subscription", "push")
    retry = single_block(push["retry_policy"])
    dead_letter = single_block(push["dead_letter_policy"])

    assert push["for_each"] == "${local.push_functions}"
    assert push["topic"] == "${google_pubsub_topic.this[each.value.trigger_topic].id}"
    assert retry["minimum_backoff"] == "${each.value.retry.minimum_backoff_s}s"
    assert retry["maximum_backoff"] == "${each.value.retry.maximum_backoff_s}s"
    assert dead_letter["max_delivery_attempts"] == "${each.value.retry.max_delivery_attempts}"
    assert dead_letter["dead_letter_topic"] == (
        "${google_pubsub_topic.this[each.value.dead_letter_topic].id}"
    )


def test_delivery_rule_matches_the_python_one(
    terraform: TerraformConfig, topology: Topology
) -> None:
    """infra/locals.tf and cascade.cli.verify_deployment.delivery_for decide alike."""
    rule = terraform.locals["functions"]

    assert 'spec.trigger.type == "http" ? "http"' in rule
    assert (
        'spec.trigger.type == "topic" && try(spec.retry.policy, "retry") == "retry" ? "push"'
        in rule
    )
    deliveries = {delivery_for(spec) for spec in topology.functions.values()}
    assert deliveries <= {"http", "push", "eventarc"}


def test_every_event_function_is_delivered_exactly_one_way(terraform: TerraformConfig) -> None:
    assert terraform.locals["push_functions"].endswith('if fn.delivery == "push"}}')
    assert terraform.locals["eventarc_functions"].endswith('if fn.delivery == "eventarc"}}')
    assert terraform.locals["http_functions"].endswith('if fn.delivery == "http"}}')


def test_topics_are_generated_from_the_topology(terraform: TerraformConfig) -> None:
    topic = terraform.resource("google_pubsub_topic", "this")

    assert topic["for_each"] == "${local.topology.topics}"
    assert topic["name"] == "${local.topic_ids[each.key]}"
    assert terraform.locals["topic_ids"] == (
        '${{for topic, _ in local.topology.topics : topic => "${var.name_prefix}${topic}"}}'
    )


# ------------------------------------------------------------------ dead letters


def test_every_subscription_has_a_dead_letter_policy(terraform: TerraformConfig) -> None:
    subscriptions = terraform.resources["google_pubsub_subscription"]

    assert subscriptions, "no google_pubsub_subscription at all"
    for name, subscription in subscriptions.items():
        policy = single_block(subscription.get("dead_letter_policy"))
        assert policy.get("dead_letter_topic"), name
        assert policy.get("max_delivery_attempts"), name


def test_eventarc_subscriptions_get_their_dead_letter_policy(terraform: TerraformConfig) -> None:
    fix = terraform.resource("terraform_data", "eventarc_dead_letter")
    provisioner = fix["provisioner"][0]["local-exec"]
    script = provisioner["command"]
    environment = provisioner["environment"]

    assert "local.eventarc_functions" in fix["for_each"]
    assert 'fn.retry.policy == "retry"' in fix["for_each"]
    assert "--dead-letter-topic=" in script
    assert "--max-delivery-attempts=" in script
    assert "--min-retry-delay=" in script
    assert "--max-retry-delay=" in script
    assert environment["MAX_DELIVERY_ATTEMPTS"] == (
        "${tostring(each.value.retry.max_delivery_attempts)}"
    )
    assert environment["MIN_RETRY_DELAY"] == "${each.value.retry.minimum_backoff_s}s"
    assert "each.value.dead_letter_topic" in environment["DEAD_LETTER_TOPIC"]


def test_the_pubsub_service_agent_can_forward_dead_letters(terraform: TerraformConfig) -> None:
    publisher = terraform.resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    subscriber = terraform.resource(
        "google_pubsub_subscription_iam_member", "dead_letter_forwarding"
    )

    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["member"] == "${local.pubsub_service_agent}"
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert subscriber["for_each"] == "${local.push_functions}"


# ------------------------------------------------------------------ identities


def test_each_function_runs_as_its_own_service_account(terraform: TerraformConfig) -> None:
    account = terraform.resource("google_service_account", "function")
    service = single_block(_every_function_body(terraform)["service_config"])

    assert account["for_each"] == "${local.functions}"
    assert service["service_account_email"] == (
        "${google_service_account.function[each.key].email}"
    )
    assert account["account_id"] == "${var.name_prefix}${each.key}"


def test_service_account_names_match_the_deployment_check(terraform: TerraformConfig) -> None:
    target = DeploymentTarget(project="proj", region="r", name_prefix="cx-", buckets={})
    function_template = terraform.resource("google_service_account", "function")["account_id"]
    invoker_template = terraform.resource("google_service_account", "invoker")["account_id"]

    def email(template: str, key: str) -> str:
        account_id = template.replace("${var.name_prefix}", "cx-").replace("${each.key}", key)
        return f"{account_id}@proj.iam.gserviceaccount.com"

    assert email(function_template, "validate") == target.service_account_email("validate")
    assert email(invoker_template, "") == target.service_account_email(INVOKER_ACCOUNT)
    push = terraform.resource("google_pubsub_subscription", "push")
    assert push["name"] == "${local.function_names[each.key]}"
    assert terraform.locals["function_names"] == (
        '${{for name, _ in local.functions : name => "${var.name_prefix}${name}"}}'
    )


def test_function_access_is_derived_from_the_topology(terraform: TerraformConfig) -> None:
    """No hand-kept map: every grant comes from the topology's `access` declarations
    (test_topology_grants.py evaluates them and compares values)."""
    derived = terraform.locals["function_access"]

    assert "for name, spec in local.topology.functions" in derived
    assert "spec.access.publish" in derived


def test_act_as_on_the_jobs_account_only_for_the_functions_that_submit_jobs(
    terraform: TerraformConfig, topology: Topology
) -> None:
    """train and train-http submit training jobs; batch-predict submits batch prediction
    jobs; all of them run as vertex-jobs. Nothing else acts as it."""
    submitters = {
        name for name, spec in topology.functions.items() if "vertex-jobs" in spec.access.act_as
    }
    act_as = terraform.resource("google_service_account_iam_member", "function_act_as")

    assert submitters == {
        name
        for name, spec in topology.functions.items()
        if spec.source in ("functions/train", "functions/batch_predict")
    }
    assert act_as["for_each"] == "${local.function_act_as_grants}"
    assert act_as["role"] == "roles/iam.serviceAccountUser"
    assert "google_service_account.vertex_jobs.name" in act_as["service_account_id"]


def test_no_other_grant_gives_act_as_or_owner(
    terraform: TerraformConfig, topology: Topology
) -> None:
    forbidden = {"roles/iam.serviceAccountUser", "roles/owner", "roles/editor"}
    for resource_type, named in terraform.resources.items():
        if not resource_type.endswith(("_iam_member", "_iam_binding")):
            continue
        for name, body in named.items():
            if (resource_type, name) == ("google_service_account_iam_member", "function_act_as"):
                continue
            assert body.get("role") not in forbidden, f"{resource_type}.{name}"
    for api in topology.apis.values():
        assert not forbidden & set(api.roles)


def test_event_functions_are_invoked_only_by_the_invoker_account(
    terraform: TerraformConfig,
) -> None:
    invoker = terraform.resource("google_cloud_run_v2_service_iam_member", "invoker")
    push = terraform.resource("google_pubsub_subscription", "push")
    oidc = single_block(single_block(push["push_config"])["oidc_token"])
    content = single_block(
        dynamic_block(_every_function_body(terraform), "event_trigger")["content"]
    )

    assert invoker["for_each"] == "${local.event_functions}"
    assert invoker["role"] == "roles/run.invoker"
    assert invoker["member"] == "${google_service_account.invoker.member}"
    assert oidc["service_account_email"] == "${google_service_account.invoker.email}"
    assert content["service_account_email"] == "${google_service_account.invoker.email}"


# ------------------------------------------------------------------ nothing public


def test_no_public_principal_anywhere_in_infra() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {word}"
        for path in sorted(INFRA_DIR.rglob("*"))
        if path.is_file() and ".terraform" not in path.parts
        for word in ("allUsers", "allAuthenticatedUsers")
        if word in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert offenders == []


def test_event_functions_accept_internal_traffic_only(terraform: TerraformConfig) -> None:
    service = single_block(_every_function_body(terraform)["service_config"])

    assert service["ingress_settings"] == (
        '${each.value.delivery == "http" ? var.http_ingress : "ALLOW_INTERNAL_ONLY"}'
    )


def test_buckets_are_private_versioned_and_optionally_cmek(terraform: TerraformConfig) -> None:
    buckets = terraform.resources["google_storage_bucket"]

    assert set(buckets) == {"landing", "artifacts", "function_sources"}
    for name, bucket in buckets.items():
        assert bucket["uniform_bucket_level_access"] is True, name
        assert bucket["public_access_prevention"] == "enforced", name
        assert single_block(bucket["versioning"])["enabled"] is True, name
        assert "var.kms_key_name" in dynamic_block(bucket, "encryption")["for_each"], name


def test_quarantine_and_runs_have_lifecycle_rules(terraform: TerraformConfig) -> None:
    def prefixes(bucket: dict[str, Any]) -> set[str]:
        found: set[str] = set()
        for rule in bucket.get("lifecycle_rule", []):
            condition = single_block(rule["condition"])
            found.update(condition.get("matches_prefix", []))
        return found

    buckets = terraform.resources["google_storage_bucket"]
    assert "quarantine/" in prefixes(buckets["landing"])
    assert {"quarantine/", "runs/"} <= prefixes(buckets["artifacts"])


def test_source_objects_are_named_by_content_hash(terraform: TerraformConfig) -> None:
    source = terraform.resource("google_storage_bucket_object", "function_source")
    storage = single_block(
        single_block(single_block(_every_function_body(terraform)["build_config"])["source"])[
            "storage_source"
        ]
    )

    assert source["name"] == "functions/${each.key}/${each.value.sha256}.zip"
    assert storage["object"] == "${google_storage_bucket_object.function_source[each.key].name}"


# ------------------------------------------------------------------ settings


def test_every_function_gets_the_runtime_settings(terraform: TerraformConfig) -> None:
    expected = {
        "CASCADE_PROJECT",
        "CASCADE_REGION",
        "CASCADE_LANDING_BUCKET",
        "CASCADE_ARTIFACTS_BUCKET",
        "CASCADE_TOPIC_PREFIX",
        "CASCADE_FUNCTION_NAME",
        "CASCADE_FUNCTION_TIMEOUT_S",
        "CASCADE_MAX_EVENT_AGE_S",
    }
    common = set(terraform.locals["common_environment"])
    per_function = terraform.locals["function_environment"]

    assert expected - common <= {
        "CASCADE_FUNCTION_NAME",
        "CASCADE_FUNCTION_TIMEOUT_S",
        "CASCADE_MAX_EVENT_AGE_S",
    }
    assert "CASCADE_FUNCTION_TIMEOUT_S = tostring(fn.timeout_s)" in per_function
    assert "CASCADE_MAX_EVENT_AGE_S = tostring(fn.max_event_age_s)" in per_function
    assert "CASCADE_FUNCTION_NAME = name" in per_function
    settings_fields = {name.upper() for name in Settings.model_fields}
    for variable in expected:
        assert variable.removeprefix("CASCADE_") in settings_fields, variable


# ------------------------------------------------------------------ module hygiene


def test_every_variable_is_typed_and_described(terraform: TerraformConfig) -> None:
    for name, variable in terraform.variables.items():
        assert variable.get("type"), name
        assert len(variable.get("description", "")) > 20, name


def test_every_output_is_described(terraform: TerraformConfig) -> None:
    assert terraform.outputs
    for name, output in terraform.outputs.items():
        assert output.get("description"), name


def test_provider_versions_are_pinned_to_a_range(terraform: TerraformConfig) -> None:
    (settings,) = terraform.terraform
    google = single_block(settings["required_providers"])["google"]

    assert google["source"] == "hashicorp/google"
    assert ">=" in google["version"]
    assert "<" in google["version"].replace("<=", "")
    assert ">=" in settings["required_version"]


def test_example_tfvars_only_sets_declared_variables(terraform: TerraformConfig) -> None:
    example = parse_tf(INFRA_DIR / "terraform.tfvars.example")

    assert "project_id" in example
    assert set(example) <= set(terraform.variables)


def test_log_sink_and_scheduler_publish_to_topology_topics(terraform: TerraformConfig) -> None:
    sink = terraform.resource("google_logging_project_sink", "job_events")
    scheduler = terraform.resource("google_cloud_scheduler_job", "retrain")

    assert sink["destination"] == (
        "pubsub.googleapis.com/${google_pubsub_topic.this[local.job_events_topic].id}"
    )
    assert sink["unique_writer_identity"] is True
    assert terraform.locals["job_events_topic"] == "job-events"
    assert scheduler["for_each"] == "${var.retrain_schedules}"
    assert single_block(scheduler["pubsub_target"])["topic_name"] == (
        "${google_pubsub_topic.this[local.train_requests_topic].id}"
    )
    assert terraform.locals["train_requests_topic"] == "train-requests"


def test_dead_letters_raise_an_alert(terraform: TerraformConfig) -> None:
    alert = terraform.resource("google_monitoring_alert_policy", "dead_letters")
    condition = single_block(single_block(alert["conditions"])["condition_threshold"])

    assert "local.dead_letter_topics" in alert["for_each"]
    assert "num_undelivered_messages" in condition["filter"]
    assert "google_pubsub_subscription.review[each.key].name" in condition["filter"]


def test_the_trainer_image_is_readable_by_the_vertex_ai_service_agent(
    terraform: TerraformConfig,
) -> None:
    """Vertex AI pulls a job's image as its service agent, not as the job's account."""
    readers = terraform.resources["google_artifact_registry_repository_iam_member"]

    assert "vertex_jobs_reader" not in readers
    reader = readers["vertex_service_agent_reader"]
    assert reader["role"] == "roles/artifactregistry.reader"
    assert reader["member"] == "${local.vertex_ai_service_agent}"
    assert (
        "@gcp-sa-aiplatform.iam.gserviceaccount.com" in terraform.locals["vertex_ai_service_agent"]
    )


def test_the_build_account_has_what_the_functions_build_guide_asks_for(
    terraform: TerraformConfig,
) -> None:
    """Logs Writer, Artifact Registry Writer, Storage Object Admin (sources, staging)."""
    project_roles = terraform.resource("google_project_iam_member", "builder")["for_each"]
    sources = terraform.resource("google_storage_bucket_iam_member", "builder_reads_sources")
    staged = terraform.resource("google_project_iam_member", "builder_staged_sources")

    assert "roles/logging.logWriter" in project_roles
    assert "roles/artifactregistry.writer" in project_roles
    assert sources["role"] == "roles/storage.objectAdmin"
    assert staged["role"] == "roles/storage.objectAdmin"
    assert "gcf-v2-" in single_block(staged["condition"])["expression"]


def test_deploy_may_act_as_the_endpoint_account(
    terraform: TerraformConfig, topology: Topology
) -> None:
    assert "endpoint" in topology.functions["deploy"].access.act_as
    assert "endpoint_service_account" in terraform.variables
    assert "bless_http_invokers" in terraform.variables
