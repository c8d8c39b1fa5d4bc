"""The values of infra/*.tf are the topology's: Terraform computes them, the test compares.

tests/infra/test_infra_terraform.py reads the HCL as text, which catches a renamed
resource but not a changed value. Here Terraform itself evaluates the resources
(tests/infra/terraform_eval.py: a provider-less copy, the google resources stubbed) with
infra/topology.yaml, and every value is compared with what cascade.core.topology loads
from that same file: delivery settings (max delivery attempts, backoff, ack deadline,
retention), the topics and the triggers of each function, the Eventarc dead-letter step,
and every IAM grant, so that each identity holds exactly what its topology entry says and
nothing is public or an owner/editor/admin role. Nothing the topology says is restated
here; the numbers stated are Pub/Sub's own limits.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cascade.core.messages import JobEvent, TrainRequest
from cascade.core.topology import (
    INVOKER_GROUPS,
    Access,
    FunctionSpec,
    RetryPolicy,
    StorageTrigger,
    TopicTrigger,
    Topology,
    load_topology,
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

pytestmark = pytest.mark.infra

# Pub/Sub's limits (cloud.google.com/pubsub/docs/subscription-properties): the longest ack
# deadline, and the shortest and longest message retention of a subscription.
PUBSUB_MAX_ACK_DEADLINE_S = 600
PUBSUB_MIN_RETENTION_S = 600
PUBSUB_MAX_RETENTION_S = 7 * 86400

PROJECT = "cascade-test"
ENDPOINT_ACCOUNT = "serving@other-project.iam.gserviceaccount.com"
# The members each HTTP invoker group's variable is given here (one distinct member each,
# so a grant to the wrong function shows).
INVOKER_VARIABLES = {
    "retrain": "train_http_invokers",
    "bless": "bless_http_invokers",
    "review": "review_http_invokers",
}
INVOKER_MEMBERS = {
    "retrain": "group:retrainers@example.com",
    "bless": "user:lead@example.com",
    "review": "group:stewards@example.com",
}
KMS_KEY = f"projects/{PROJECT}/locations/us-central1/keyRings/cascade/cryptoKeys/cascade"

# Roles nobody gets: the basic roles and any administrator role.
FORBIDDEN_ROLE = re.compile(r"^roles/(owner|editor|viewer)$|admin", re.IGNORECASE)
# Roles that let a member act as a service account.
IMPERSONATION_ROLES = {
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountTokenCreator",
    "roles/iam.workloadIdentityUser",
}

FUNCTION_ACCOUNT = "google_service_account.function"
VERTEX_JOBS_ACCOUNT = "google_service_account.vertex_jobs"
INVOKER_ACCOUNT = "google_service_account.invoker"
BUILDER_ACCOUNT = "google_service_account.builder"
FUNCTION = "google_cloudfunctions2_function.this"
TOPIC = "google_pubsub_topic.this"
PUSH = "google_pubsub_subscription.push"
REVIEW = "google_pubsub_subscription.review"
STREAM = "google_pubsub_subscription.stream"
EVENTARC_DEAD_LETTER = "terraform_data.eventarc_dead_letter"


# ------------------------------------------------------------------ evaluation


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(TOPOLOGY)


@pytest.fixture(scope="module")
def infra() -> InfraConfig:
    return load_infra(INFRA_DIR)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("terraform-values")


def evaluated_addresses(infra: InfraConfig) -> list[str]:
    """What is evaluated: delivery, functions, topics, schedules and every IAM grant."""
    kinds = (
        "google_pubsub_topic",
        "google_pubsub_subscription",
        "google_cloudfunctions2_function",
        "google_cloud_scheduler_job",
    )
    return [
        *infra.resources_of(lambda kind: kind in kinds),
        EVENTARC_DEAD_LETTER,
        *infra.resources_of(lambda kind: kind.endswith(("_iam_member", "_iam_binding"))),
    ]


@pytest.fixture(scope="module")
def evaluated(workdir: Path, infra: InfraConfig, topology: Topology) -> EvaluatedInfra:
    # The package manifest `cascade package-functions` writes, one zip per function.
    manifest = workdir / "manifest.json"
    packages = {name: {"zip": f"{name}.zip", "sha256": "0" * 64} for name in topology.functions}
    manifest.write_text(json.dumps({"functions": packages}), encoding="utf-8")
    # Variables left unset keep their defaults: the defaults are what is checked.
    variables = {
        "project_id": PROJECT,
        "topology_path": str(TOPOLOGY),
        "function_packages_manifest": str(manifest),
        "endpoint_service_account": ENDPOINT_ACCOUNT,
        "kms_key_name": KMS_KEY,
        **{INVOKER_VARIABLES[group]: [member] for group, member in INVOKER_MEMBERS.items()},
    }
    return evaluate_infra(
        workdir,
        infra,
        variables,
        addresses=evaluated_addresses(infra),
        local_names=(
            "functions",
            "topology_buckets",
            "pubsub_service_agent",
            "job_events_topic",
            "train_requests_topic",
        ),
    )


def default(infra: InfraConfig, variable: str) -> Any:
    return infra.variables[variable]["default"]


def one(blocks: Any) -> dict[str, Any]:
    """A block that appears exactly once."""
    assert isinstance(blocks, list), blocks
    assert len(blocks) == 1, blocks
    block = blocks[0]
    assert isinstance(block, dict)
    return block


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration.removesuffix("s"))


def topic_id(name: str) -> str:
    return ref(TOPIC, "id", name)


def function_member(name: str) -> str:
    return ref(FUNCTION_ACCOUNT, "member", name)


def push_functions(topology: Topology) -> dict[str, FunctionSpec]:
    return {name: spec for name, spec in topology.functions.items() if spec.delivery == "push"}


def review_topics(infra: InfraConfig, topology: Topology) -> dict[str, str]:
    """Topic -> where its review subscription escalates: every topic that no function
    consumes, and every dead-letter topic (those escalate to the escalation topic)."""
    events = topology.event_functions()
    dead_letter_topics = {spec.dead_letter_topic for spec in events}
    consumed = {spec.trigger.topic for spec in events if isinstance(spec.trigger, TopicTrigger)}
    escalation = default(infra, "review_escalation_topic")
    return {
        topic: escalation if topic in dead_letter_topics else topology.defaults.dead_letter_topic
        for topic in topology.topics
        if topic not in consumed or topic in dead_letter_topics
    }


def upper_bound(model: type[RetryPolicy], field: str) -> int:
    for constraint in model.model_fields[field].metadata:
        bound = getattr(constraint, "le", None)
        if bound is not None:
            return int(bound)
    raise AssertionError(f"{model.__name__}.{field} has no upper bound")


# ------------------------------------------------------------------ the topology record


def test_each_function_record_is_the_topology_entry(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    """locals.tf normalizes the YAML itself (defaults, retry model defaults, delivery):
    it must come out as cascade.core.topology parses it."""
    records = evaluated.locals["functions"]

    assert set(records) == set(topology.functions)
    for name, spec in topology.functions.items():
        record = records[name]
        trigger = spec.trigger
        assert record["source"] == spec.source, name
        assert record["entry_point"] == spec.entry_point, name
        assert record["signature"] == spec.signature, name
        assert record["trigger_type"] == trigger.type, name
        assert record["trigger_topic"] == getattr(trigger, "topic", None), name
        assert record["trigger_bucket"] == getattr(trigger, "bucket", None), name
        assert record["event_type"] == getattr(trigger, "event_type", None), name
        assert record["retry"] == spec.retry.model_dump(), name
        assert record["dead_letter_topic"] == spec.dead_letter_topic, name
        assert record["timeout_s"] == spec.timeout_s, name
        assert record["memory"] == spec.memory, name
        assert record["cpu"] == spec.cpu, name
        assert record["max_instances"] == spec.max_instances, name
        assert record["max_event_age_s"] == spec.max_event_age_s, name
        assert record["delivery"] == spec.delivery, name


# ------------------------------------------------------------------ push delivery


def test_push_subscriptions_use_the_topology_retry_and_dead_letter_policy(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    subscriptions = evaluated.instances(PUSH)
    expected = push_functions(topology)

    assert set(subscriptions) == set(expected)
    for name, spec in expected.items():
        subscription = subscriptions[name]
        retry = one(subscription["retry_policy"])
        dead_letter = one(subscription["dead_letter_policy"])
        assert isinstance(spec.trigger, TopicTrigger)
        assert subscription["topic"] == topic_id(spec.trigger.topic), name
        assert seconds(retry["minimum_backoff"]) == spec.retry.minimum_backoff_s, name
        assert seconds(retry["maximum_backoff"]) == spec.retry.maximum_backoff_s, name
        assert dead_letter["max_delivery_attempts"] == spec.retry.max_delivery_attempts, name
        assert spec.dead_letters_to is not None
        assert dead_letter["dead_letter_topic"] == topic_id(spec.dead_letters_to), name


def test_push_ack_deadline_is_the_function_timeout(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    """Pub/Sub waits the ack deadline for the push response, then pushes again: shorter
    than the function's timeout, a slow but healthy run is delivered twice."""
    subscriptions = evaluated.instances(PUSH)
    for name, spec in push_functions(topology).items():
        assert spec.timeout_s <= PUBSUB_MAX_ACK_DEADLINE_S, (
            f"{name}: a push function's timeout_s cannot exceed Pub/Sub's longest ack deadline"
        )
        assert subscriptions[name]["ack_deadline_seconds"] == spec.timeout_s, name


def test_push_retention_keeps_messages_for_the_max_event_age(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    subscriptions = evaluated.instances(PUSH)
    for name, spec in push_functions(topology).items():
        expected = min(max(spec.max_event_age_s, PUBSUB_MIN_RETENTION_S), PUBSUB_MAX_RETENTION_S)
        assert seconds(subscriptions[name]["message_retention_duration"]) == expected, name
        assert subscriptions[name]["retain_acked_messages"] is False, name


def test_push_subscriptions_call_their_function_as_the_invoker(
    evaluated: EvaluatedInfra, topology: Topology, infra: InfraConfig
) -> None:
    subscriptions = evaluated.instances(PUSH)
    prefix = default(infra, "name_prefix")
    for name, spec in push_functions(topology).items():
        push = one(subscriptions[name]["push_config"])
        oidc = one(push["oidc_token"])
        uri = ref(FUNCTION, "service_config.uri", name)
        assert isinstance(spec.trigger, TopicTrigger)
        assert push["push_endpoint"] == (
            f"{uri}/projects/{PROJECT}/topics/{prefix}{spec.trigger.topic}"
        ), name
        assert oidc["audience"] == uri, name
        assert oidc["service_account_email"] == ref(INVOKER_ACCOUNT, "email"), name


# ------------------------------------------------------------------ Eventarc delivery


def test_functions_run_with_their_topology_settings(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    functions = evaluated.instances(FUNCTION)

    assert set(functions) == set(topology.functions)
    for name, spec in topology.functions.items():
        build = one(functions[name]["build_config"])
        service = one(functions[name]["service_config"])
        environment = service["environment_variables"]
        assert build["runtime"] == topology.runtime, name
        assert build["entry_point"] == spec.entry_point, name
        assert service["available_memory"] == spec.memory, name
        assert service["available_cpu"] == spec.cpu, name
        assert service["timeout_seconds"] == spec.timeout_s, name
        assert service["max_instance_count"] == spec.max_instances, name
        assert service["service_account_email"] == ref(FUNCTION_ACCOUNT, "email", name), name
        assert environment["CASCADE_FUNCTION_NAME"] == name
        assert environment["CASCADE_FUNCTION_TIMEOUT_S"] == str(spec.timeout_s), name
        assert environment["CASCADE_MAX_EVENT_AGE_S"] == str(spec.max_event_age_s), name
        if spec.delivery != "http":
            assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY", name


def test_eventarc_triggers_are_the_topology_triggers(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    functions = evaluated.instances(FUNCTION)
    buckets = evaluated.locals["topology_buckets"]
    for name, spec in topology.functions.items():
        triggers = functions[name]["event_trigger"]
        if spec.delivery != "eventarc":
            assert triggers == [], f"{name} ({spec.delivery}) has an Eventarc trigger"
            continue
        trigger = one(triggers)
        retry = (
            "RETRY_POLICY_RETRY" if spec.retry.policy == "retry" else "RETRY_POLICY_DO_NOT_RETRY"
        )
        assert trigger["retry_policy"] == retry, name
        assert trigger["event_type"] == getattr(spec.trigger, "event_type", None), name
        assert trigger["service_account_email"] == ref(INVOKER_ACCOUNT, "email"), name
        if isinstance(spec.trigger, TopicTrigger):
            assert trigger["pubsub_topic"] == topic_id(spec.trigger.topic), name
            assert trigger["event_filters"] == [], name
        else:
            assert isinstance(spec.trigger, StorageTrigger)
            assert trigger["pubsub_topic"] is None, name
            assert trigger["event_filters"] == [
                {"attribute": "bucket", "value": buckets[spec.trigger.bucket]}
            ], name


def test_the_eventarc_dead_letter_step_is_on_by_default(
    evaluated: EvaluatedInfra, topology: Topology, infra: InfraConfig
) -> None:
    """Eventarc's own subscriptions get no dead-letter policy unless this step runs: by
    default it runs for every Eventarc function that retries."""
    retrying = {
        name
        for name, spec in topology.functions.items()
        if spec.delivery == "eventarc" and spec.retry.policy == "retry"
    }

    assert default(infra, "configure_eventarc_dead_letter") is True
    assert retrying, "the topology has no retrying Eventarc trigger to check"
    assert set(evaluated.instances(EVENTARC_DEAD_LETTER)) == retrying


def test_the_eventarc_dead_letter_step_applies_the_topology_retry_policy(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    for name, step in evaluated.instances(EVENTARC_DEAD_LETTER).items():
        spec = topology.functions[name]
        retry = spec.retry
        assert spec.dead_letters_to is not None
        trigger = ref(FUNCTION, "event_trigger.trigger", name)
        environment = one(step["provisioner"])["local-exec"]["environment"]
        replace = step["triggers_replace"]
        assert environment["TRIGGER"] == trigger, name
        assert environment["DEAD_LETTER_TOPIC"] == topic_id(spec.dead_letters_to), name
        assert environment["MAX_DELIVERY_ATTEMPTS"] == str(retry.max_delivery_attempts), name
        assert seconds(environment["MIN_RETRY_DELAY"]) == retry.minimum_backoff_s, name
        assert seconds(environment["MAX_RETRY_DELAY"]) == retry.maximum_backoff_s, name
        assert environment["PUBSUB_SERVICE_AGENT"] == evaluated.locals["pubsub_service_agent"]
        assert environment["PROJECT"] == PROJECT
        # A change of any of these re-runs the step.
        assert replace == {
            "trigger": trigger,
            "dead_letter_topic": topic_id(spec.dead_letters_to),
            "max_delivery_attempts": retry.max_delivery_attempts,
            "minimum_backoff_s": retry.minimum_backoff_s,
            "maximum_backoff_s": retry.maximum_backoff_s,
        }, name


# ------------------------------------------------------------------ topics and review


def test_topics_are_the_topology_topics(evaluated: EvaluatedInfra, topology: Topology) -> None:
    topics = evaluated.instances(TOPIC)

    assert set(topics) == set(topology.topics)
    for name, topic in topics.items():
        assert topic["kms_key_name"] == KMS_KEY, name
        assert topic["labels"] == {"logical-name": name}


def test_only_the_subscriptions_of_the_design_exist(infra: InfraConfig) -> None:
    """Push subscriptions per push function, review subscriptions per review topic, a
    Cloud Storage subscription per stream (infra/streams.tf, tests/infra/test_infra_streams.py)."""
    assert infra.resources_of(lambda kind: kind == "google_pubsub_subscription") == [
        PUSH,
        REVIEW,
        STREAM,
    ]


def test_review_subscriptions_keep_unconsumed_topics_and_dead_letters(
    evaluated: EvaluatedInfra, topology: Topology, infra: InfraConfig
) -> None:
    """A person reads them (pull, look, nack), so a message escalates only after Pub/Sub's
    maximum of delivery attempts: dead letters to the escalation topic, others to the
    dead-letter topic."""
    subscriptions = evaluated.instances(REVIEW)
    expected = review_topics(infra, topology)

    assert set(subscriptions) == set(expected)
    assert default(infra, "review_escalation_topic") in topology.topics
    dead_letter_topics = {spec.dead_letter_topic for spec in topology.event_functions()}
    for topic, escalation in expected.items():
        # Escalating into the topic itself, or a dead letter into a dead-letter topic,
        # would go round in circles.
        assert escalation != topic, topic
        assert topic not in dead_letter_topics or escalation not in dead_letter_topics, topic
    for topic, escalation in expected.items():
        subscription = subscriptions[topic]
        dead_letter = one(subscription["dead_letter_policy"])
        assert subscription["topic"] == topic_id(topic)
        assert dead_letter["dead_letter_topic"] == topic_id(escalation), topic
        assert dead_letter["max_delivery_attempts"] == upper_bound(
            RetryPolicy, "max_delivery_attempts"
        ), topic
        assert subscription["message_retention_duration"] == default(infra, "review_retention")
        assert seconds(subscription["message_retention_duration"]) <= PUBSUB_MAX_RETENTION_S
        assert subscription["retain_acked_messages"] is True, topic


def test_the_sink_and_the_retrain_schedule_publish_the_message_topics(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    assert evaluated.locals["job_events_topic"] == JobEvent.TOPIC
    assert evaluated.locals["train_requests_topic"] == TrainRequest.TOPIC
    assert {JobEvent.TOPIC, TrainRequest.TOPIC} <= set(topology.topics)


def test_topology_schedules_publish_their_data_to_their_topic(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    jobs = evaluated.resources.get("google_cloud_scheduler_job.topology", {})

    assert set(jobs) == set(topology.schedules)
    for name, schedule in topology.schedules.items():
        target = one(jobs[name]["pubsub_target"])
        assert target["topic_name"] == topic_id(schedule.topic), name
        assert json.loads(base64.b64decode(target["data"])) == schedule.data, name
        assert jobs[name]["schedule"] == schedule.schedule, name
        assert jobs[name]["time_zone"] == schedule.time_zone, name


# ------------------------------------------------------------------ grants


def grants(evaluated: EvaluatedInfra) -> list[dict[str, Any]]:
    """Every IAM member instance: its address, member, role, target and condition."""
    found = []
    for address, key, body in iter_grants(evaluated):
        target_field = next(
            f
            for f in (
                "subscription",
                "topic",
                "bucket",
                "service_account_id",
                "repository",
                "crypto_key_id",
                "dataset_id",
                "name",
                "project",
            )
            if f in body
        )
        found.append(
            {
                "at": f"{address}[{key}]",
                "member": body["member"],
                "role": body["role"],
                "target": body[target_field],
                "condition": body.get("condition") or [],
            }
        )
    return found


def held_by(evaluated: EvaluatedInfra, member: str) -> set[tuple[str, str]]:
    return {(g["target"], g["role"]) for g in grants(evaluated) if g["member"] == member}


def test_no_grant_is_public(evaluated: EvaluatedInfra) -> None:
    public = [g["at"] for g in grants(evaluated) if g["member"].startswith("all")]
    assert public == []


@pytest.mark.parametrize("variable", sorted(INVOKER_VARIABLES.values()))
@pytest.mark.parametrize("member", ["allUsers", "allAuthenticatedUsers"])
def test_public_invokers_are_refused(
    evaluated: EvaluatedInfra, workdir: Path, variable: str, member: str
) -> None:
    refusal = plan_refuses(workdir, {"project_id": PROJECT, variable: [member]})
    assert "must not contain public principals" in refusal


def test_no_grant_is_an_owner_editor_or_admin_role(evaluated: EvaluatedInfra) -> None:
    """The one exception is Google's requirement for a custom Cloud Functions build
    account: Storage Object Admin, on the sources bucket and on the gcf-v2-* staging
    buckets only (a condition)."""
    builder = ref(BUILDER_ACCOUNT, "member")
    offenders = []
    for grant in grants(evaluated):
        if not FORBIDDEN_ROLE.search(grant["role"]):
            continue
        staging = any("gcf-v2-" in c.get("expression", "") for c in grant["condition"])
        sources = grant["target"] == ref("google_storage_bucket.function_sources", "name")
        if (grant["member"], grant["role"]) == (builder, "roles/storage.objectAdmin") and (
            staging or sources
        ):
            continue
        offenders.append(f"{grant['at']}: {grant['role']} to {grant['member']}")
    assert offenders == []


def test_each_function_account_holds_exactly_its_topology_access(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    buckets = evaluated.locals["topology_buckets"]
    for name, spec in topology.functions.items():
        access = spec.access
        expected = {(topic_id(topic), "roles/pubsub.publisher") for topic in access.publish}
        expected |= {(buckets[b], "roles/storage.objectViewer") for b in access.read}
        expected |= {(buckets[b], "roles/storage.objectUser") for b in access.write}
        expected |= {(buckets[b], "roles/storage.objectCreator") for b in access.create}
        expected |= {(PROJECT, role) for api in access.apis for role in topology.apis[api].roles}
        expected |= dataset_grants(evaluated, access)
        for account in access.act_as:
            if topology.service_accounts[account].external:
                target = f"projects/{PROJECT}/serviceAccounts/{ENDPOINT_ACCOUNT}"
            else:
                target = ref(f"google_service_account.{account.replace('-', '_')}", "name")
            expected.add((target, "roles/iam.serviceAccountUser"))
            if account == "dataflow-workers":  # a Beam launcher (infra/dataflow.tf)
                expected.add((PROJECT, "google_project_iam_custom_role.dataflow_launcher.id"))
        assert held_by(evaluated, function_member(name)) == expected, name


def test_the_vertex_jobs_account_holds_exactly_its_topology_access(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    access = topology.service_accounts["vertex-jobs"].access
    buckets = evaluated.locals["topology_buckets"]
    expected = {(topic_id(topic), "roles/pubsub.publisher") for topic in access.publish}
    expected |= {(buckets[b], "roles/storage.objectViewer") for b in access.read}
    expected |= {(buckets[b], "roles/storage.objectUser") for b in access.write}
    expected |= {(PROJECT, role) for api in access.apis for role in topology.apis[api].roles}
    expected |= dataset_grants(evaluated, access)
    assert any(role == "roles/bigquery.dataEditor" for _, role in expected)

    assert held_by(evaluated, ref(VERTEX_JOBS_ACCOUNT, "member")) == expected


def dataset_grants(evaluated: EvaluatedInfra, access: Access) -> set[tuple[str, str]]:
    """What topology ``tables_read`` / ``tables_write`` grant, on the datasets bigquery.tf
    creates."""
    del evaluated  # the datasets are resources: their ids are references here

    def dataset(name: str) -> str:
        return ref("google_bigquery_dataset.warehouse", "dataset_id", name)

    return {(dataset(name), "roles/bigquery.dataViewer") for name in access.tables_read} | {
        (dataset(name), "roles/bigquery.dataEditor") for name in access.tables_write
    }


def test_event_functions_are_invoked_by_the_invoker_account_only(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    """The invoker calls every event function and nothing else, and receives the
    Eventarc events; no other member may call an event function."""
    events = {spec.name for spec in topology.event_functions()}
    services = {ref(FUNCTION, "service_config.service", name) for name in events}

    assert held_by(evaluated, ref(INVOKER_ACCOUNT, "member")) == {
        *((service, "roles/run.invoker") for service in services),
        (PROJECT, "roles/eventarc.eventReceiver"),
    }
    for grant in grants(evaluated):
        if grant["target"] in services:
            assert grant["member"] == ref(INVOKER_ACCOUNT, "member"), grant["at"]


def test_http_functions_are_invoked_by_their_invoker_group_only(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    assert set(INVOKER_VARIABLES) == set(INVOKER_GROUPS)
    invoked = {
        (g["target"], g["member"]) for g in grants(evaluated) if g["role"] == "roles/run.invoker"
    }
    for name, spec in topology.functions.items():
        if spec.delivery != "http":
            continue
        service = ref(FUNCTION, "service_config.service", name)
        callers = {member for target, member in invoked if target == service}
        expected = {INVOKER_MEMBERS[spec.invokers]} if spec.invokers else set()
        assert callers == expected, name


def test_the_pubsub_service_agent_holds_only_what_dead_lettering_needs(
    evaluated: EvaluatedInfra, topology: Topology, infra: InfraConfig
) -> None:
    """Subscriber on the subscriptions it forwards dead letters from, publisher on the
    topics it forwards them to, token creator on the invoker (push OIDC tokens), the
    CMEK key; and for the streams, writing their files: objectCreator and
    legacyBucketReader on the landing bucket."""
    reviewed = review_topics(infra, topology)
    dead_letter_topics = {spec.dead_letter_topic for spec in topology.event_functions()}
    expected = {
        *(
            (ref(PUSH, "name", name), "roles/pubsub.subscriber")
            for name in push_functions(topology)
        ),
        *((ref(REVIEW, "name", topic), "roles/pubsub.subscriber") for topic in reviewed),
        *(
            (topic_id(topic), "roles/pubsub.publisher")
            for topic in dead_letter_topics | set(reviewed.values())
        ),
        (ref(INVOKER_ACCOUNT, "name"), "roles/iam.serviceAccountTokenCreator"),
        (KMS_KEY, "roles/cloudkms.cryptoKeyEncrypterDecrypter"),
        *(
            (ref(STREAM, "name", dataset), "roles/pubsub.subscriber")
            for dataset in topology.streams
        ),
    }
    if topology.streams:
        landing = ref("google_storage_bucket.landing", "name")
        expected |= {
            (landing, "roles/storage.objectCreator"),
            (landing, "roles/storage.legacyBucketReader"),
        }

    assert held_by(evaluated, evaluated.locals["pubsub_service_agent"]) == expected


def test_review_forwarding_is_subscriber_on_the_review_subscriptions_only(
    evaluated: EvaluatedInfra, topology: Topology, infra: InfraConfig
) -> None:
    forwarding = evaluated.instances("google_pubsub_subscription_iam_member.review_forwarding")
    agent = evaluated.locals["pubsub_service_agent"]

    assert {
        (body["subscription"], body["role"], body["member"]) for body in forwarding.values()
    } == {
        (ref(REVIEW, "name", topic), "roles/pubsub.subscriber", agent)
        for topic in review_topics(infra, topology)
    }


def test_only_the_topology_act_as_and_push_tokens_impersonate(
    evaluated: EvaluatedInfra, topology: Topology
) -> None:
    """Acting as an account is granted where a topology `act_as` says so, and to the
    Pub/Sub service agent for the invoker's push tokens; to nobody else."""
    allowed = {function_member(name) for name in topology.functions}
    allowed.add(evaluated.locals["pubsub_service_agent"])
    offenders = [
        f"{g['at']}: {g['role']} to {g['member']}"
        for g in grants(evaluated)
        if g["role"] in IMPERSONATION_ROLES and g["member"] not in allowed
    ]
    assert offenders == []


def test_the_endpoint_account_reads_only_serving_json_in_the_artifacts_bucket(
    evaluated: EvaluatedInfra,
) -> None:
    """The Vertex AI model server reads its own model version in
    models/<dataset>/serving.json; nothing else of the bucket (a condition)."""
    bucket = ref("google_storage_bucket.artifacts", "name")
    held = [g for g in grants(evaluated) if g["member"] == f"serviceAccount:{ENDPOINT_ACCOUNT}"]

    assert [(g["target"], g["role"]) for g in held] == [(bucket, "roles/storage.objectViewer")]
    assert one(held[0]["condition"])["expression"] == (
        f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/models/")'
        ' && resource.name.endsWith("/serving.json")'
    )
