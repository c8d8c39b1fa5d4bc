"""Post-deploy check: is every function of the topology deployed as the topology says?

For each function, with the Cloud Functions v2 API (and the Pub/Sub API for delivery):

* the function exists and is ACTIVE, runs the topology's runtime and entry point, and
  runs as its own service account ``<prefix><function>@<project>.iam.gserviceaccount.com``;
* ``http`` functions have no event trigger;
* ``push`` functions (topic trigger, policy ``retry``) have no Eventarc trigger (it would
  deliver every event twice) and are fed by the push subscription ``<prefix><function>``
  on the right topic, pushing to the function's URI as the invoker account, with the
  topology's backoff and a dead-letter policy after ``max_delivery_attempts``;
* ``eventarc`` functions (storage triggers, and topic triggers that must not retry) have
  the topology's event type, bucket or topic, retry policy and invoker account, and, when
  they retry, a dead-letter policy on the subscription Eventarc created.

The names follow infra/*.tf; ``tests/infra`` checks that both agree. Clients are passed
in, so tests use spec'd mocks and the CLI passes real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from google.api_core.exceptions import NotFound
from google.cloud.functions_v2 import EventTrigger, Function, FunctionServiceClient
from google.pubsub_v1 import PublisherClient, SubscriberClient, Subscription

from cascade.core.grants import INVOKER_ACCOUNT
from cascade.core.topology import (
    Delivery,
    FunctionSpec,
    StorageTrigger,
    TopicTrigger,
    Topology,
)

__all__ = [
    "Delivery",
    "DeploymentReport",
    "DeploymentTarget",
    "FunctionReport",
    "delivery_for",
    "verify_deployment",
]


def delivery_for(spec: FunctionSpec) -> Delivery:
    """How events reach ``spec`` in the cloud: the topology's rule (``FunctionSpec.delivery``),
    which Terraform's ``infra/locals.tf`` mirrors (tests/infra/test_message_contracts.py)."""
    return spec.delivery


@dataclass(frozen=True)
class DeploymentTarget:
    """Where the deployment is and how its resources are named.

    ``name_prefix`` is Terraform's ``name_prefix``, which is also CASCADE_TOPIC_PREFIX.
    ``buckets`` maps the topology's logical bucket names to real bucket names.
    """

    project: str
    region: str
    name_prefix: str
    buckets: dict[str, str]

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def function_id(self, function: str) -> str:
        return f"{self.name_prefix}{function}"

    def function_name(self, function: str) -> str:
        return f"{self.parent}/functions/{self.function_id(function)}"

    def service_account_email(self, account: str) -> str:
        """Email of the account whose id is ``<name_prefix><account>``."""
        return f"{self.name_prefix}{account}@{self.project}.iam.gserviceaccount.com"

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{self.name_prefix}{topic}"

    def push_subscription_path(self, function: str) -> str:
        return f"projects/{self.project}/subscriptions/{self.function_id(function)}"


@dataclass(frozen=True)
class FunctionReport:
    """What was found wrong with one function; no problems means as expected."""

    function: str
    deployed_name: str
    delivery: Delivery
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class DeploymentReport:
    """One report per topology function, in topology order."""

    functions: tuple[FunctionReport, ...]

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.functions)

    def lines(self) -> list[str]:
        """Human-readable summary: one line per function, then one per problem."""
        lines: list[str] = []
        for report in self.functions:
            status = "ok" if report.ok else "FAILED"
            lines.append(f"{status:6} {report.function} ({report.delivery}) {report.deployed_name}")
            lines.extend(f"       - {problem}" for problem in report.problems)
        return lines


@dataclass(frozen=True)
class _Clients:
    functions: FunctionServiceClient
    subscriber: SubscriberClient
    publisher: PublisherClient


def _expect(actual: object, expected: object, what: str) -> Iterator[str]:
    if actual != expected:
        yield f"{what} is {actual!r}, expected {expected!r}"


def _has_event_trigger(function: Function) -> bool:
    return bool(function.event_trigger.event_type)


def _check_function_basics(
    function: Function, spec: FunctionSpec, topology: Topology, target: DeploymentTarget
) -> Iterator[str]:
    yield from _expect(function.state, Function.State.ACTIVE, "state")
    yield from _expect(function.build_config.runtime, topology.runtime, "runtime")
    yield from _expect(function.build_config.entry_point, spec.entry_point, "entry point")
    yield from _expect(
        function.service_config.service_account_email,
        target.service_account_email(spec.name),
        "service account",
    )


def _check_dead_letter(
    subscription: Subscription, spec: FunctionSpec, target: DeploymentTarget
) -> Iterator[str]:
    where = f"subscription {subscription.name}"
    yield from _expect(
        subscription.dead_letter_policy.dead_letter_topic,
        target.topic_path(spec.dead_letter_topic),
        f"{where} dead-letter topic",
    )
    yield from _expect(
        subscription.dead_letter_policy.max_delivery_attempts,
        spec.retry.max_delivery_attempts,
        f"{where} max delivery attempts",
    )
    backoff = subscription.retry_policy
    yield from _expect(
        backoff.minimum_backoff.total_seconds(),
        float(spec.retry.minimum_backoff_s),
        f"{where} minimum backoff (s)",
    )
    yield from _expect(
        backoff.maximum_backoff.total_seconds(),
        float(spec.retry.maximum_backoff_s),
        f"{where} maximum backoff (s)",
    )


def _check_push_delivery(
    function: Function, spec: FunctionSpec, target: DeploymentTarget, clients: _Clients
) -> Iterator[str]:
    if not isinstance(spec.trigger, TopicTrigger):
        yield "push delivery needs a topic trigger"
        return
    if _has_event_trigger(function):
        yield "has an Eventarc trigger as well as its push subscription: events arrive twice"
    path = target.push_subscription_path(spec.name)
    try:
        subscription = clients.subscriber.get_subscription(subscription=path)
    except NotFound:
        yield f"push subscription {path} does not exist"
        return
    yield from _expect(subscription.topic, target.topic_path(spec.trigger.topic), "topic")
    push = subscription.push_config
    uri = function.service_config.uri
    if not uri or not push.push_endpoint.startswith(uri):
        yield f"push endpoint {push.push_endpoint!r} is not on the function URI {uri!r}"
    yield from _expect(
        push.oidc_token.service_account_email,
        target.service_account_email(INVOKER_ACCOUNT),
        "push identity",
    )
    yield from _check_dead_letter(subscription, spec, target)


def _expected_retry_policy(spec: FunctionSpec) -> int:
    if spec.retry.policy == "retry":
        return EventTrigger.RetryPolicy.RETRY_POLICY_RETRY
    return EventTrigger.RetryPolicy.RETRY_POLICY_DO_NOT_RETRY


def _check_eventarc_source(
    trigger: EventTrigger, spec: FunctionSpec, target: DeploymentTarget
) -> Iterator[str]:
    if isinstance(spec.trigger, StorageTrigger):
        filters = {item.attribute: item.value for item in trigger.event_filters}
        yield from _expect(
            filters.get("bucket"), target.buckets.get(spec.trigger.bucket), "trigger bucket"
        )
    elif isinstance(spec.trigger, TopicTrigger):
        yield from _expect(
            trigger.pubsub_topic, target.topic_path(spec.trigger.topic), "trigger topic"
        )


def _check_eventarc_dead_letter(
    trigger: EventTrigger, spec: FunctionSpec, target: DeploymentTarget, clients: _Clients
) -> Iterator[str]:
    if not trigger.pubsub_topic:
        yield "Eventarc trigger has no transport topic"
        return
    names = list(clients.publisher.list_topic_subscriptions(topic=trigger.pubsub_topic))
    if not names:
        yield f"transport topic {trigger.pubsub_topic} has no subscription"
    for name in names:
        subscription = clients.subscriber.get_subscription(subscription=name)
        yield from _check_dead_letter(subscription, spec, target)


def _check_eventarc_delivery(
    function: Function, spec: FunctionSpec, target: DeploymentTarget, clients: _Clients
) -> Iterator[str]:
    if not _has_event_trigger(function):
        yield "has no Eventarc trigger"
        return
    trigger = function.event_trigger
    event_type = getattr(spec.trigger, "event_type", "")
    yield from _expect(trigger.event_type, event_type, "event type")
    yield from _expect(trigger.retry_policy, _expected_retry_policy(spec), "retry policy")
    yield from _expect(
        trigger.service_account_email,
        target.service_account_email(INVOKER_ACCOUNT),
        "trigger identity",
    )
    yield from _check_eventarc_source(trigger, spec, target)
    if spec.retry.policy == "retry":
        yield from _check_eventarc_dead_letter(trigger, spec, target, clients)


def _check_delivery(
    function: Function, spec: FunctionSpec, target: DeploymentTarget, clients: _Clients
) -> Iterator[str]:
    delivery = delivery_for(spec)
    if delivery == "http":
        if _has_event_trigger(function):
            yield f"HTTP function has an event trigger ({function.event_trigger.event_type})"
    elif delivery == "push":
        yield from _check_push_delivery(function, spec, target, clients)
    else:
        yield from _check_eventarc_delivery(function, spec, target, clients)


def _check_function(
    spec: FunctionSpec, topology: Topology, target: DeploymentTarget, clients: _Clients
) -> FunctionReport:
    name = target.function_name(spec.name)
    try:
        function = clients.functions.get_function(name=name)
    except NotFound:
        problems: tuple[str, ...] = ("not deployed",)
    else:
        problems = (
            *_check_function_basics(function, spec, topology, target),
            *_check_delivery(function, spec, target, clients),
        )
    return FunctionReport(spec.name, name, delivery_for(spec), problems)


def verify_deployment(
    topology: Topology,
    target: DeploymentTarget,
    *,
    functions_client: FunctionServiceClient,
    subscriber_client: SubscriberClient,
    publisher_client: PublisherClient,
) -> DeploymentReport:
    """Check every function of ``topology`` in the deployment ``target``.

    Read-only. Problems are collected, not raised, so one run reports everything; API
    errors other than NotFound (permissions, outages) propagate.
    """
    clients = _Clients(functions_client, subscriber_client, publisher_client)
    return DeploymentReport(
        tuple(
            _check_function(spec, topology, target, clients) for spec in topology.functions.values()
        )
    )
