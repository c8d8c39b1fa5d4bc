"""cascade.cli.verify_deployment against spec'd Cloud Functions and Pub/Sub clients."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any
from unittest.mock import call, create_autospec

import pytest
from click.testing import CliRunner
from google.api_core.exceptions import NotFound
from google.cloud.functions_v2 import (
    BuildConfig,
    EventFilter,
    EventTrigger,
    Function,
    FunctionServiceClient,
    ServiceConfig,
)
from google.pubsub_v1 import (
    DeadLetterPolicy,
    PublisherClient,
    PushConfig,
    RetryPolicy,
    SubscriberClient,
    Subscription,
)
from pytest_mock import MockerFixture

from cascade.cli.infra import verify_deployment_command
from cascade.cli.verify_deployment import DeploymentTarget, delivery_for, verify_deployment
from cascade.core.settings import load_settings
from cascade.core.topology import Topology, parse_topology

PROJECT = "proj-1"
REGION = "europe-west1"
PREFIX = "cx-"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
INVOKER = f"cx-invoker@{PROJECT}.iam.gserviceaccount.com"
TRANSPORT_TOPIC = f"projects/{PROJECT}/topics/eventarc-{REGION}-validate-123"
EVENTARC_SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/eventarc-{REGION}-validate-123-sub-1"
PUSH_SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/cx-transform"
DEAD_LETTER_TOPIC = f"projects/{PROJECT}/topics/cx-dead-letter"


@pytest.fixture
def topology() -> Topology:
    return parse_topology(
        {
            "runtime": "python311",
            "buckets": {"landing": {}, "artifacts": {}},
            "topics": {"data-validated": {}, "alerts": {}, "dead-letter": {}},
            "defaults": {
                "retry": {"max_delivery_attempts": 7, "minimum_backoff_s": 5},
                "dead_letter_topic": "dead-letter",
                "timeout_s": 540,
                "memory": "512Mi",
                "cpu": "1",
                "max_instances": 10,
                "max_event_age_s": 86400,
            },
            "functions": {
                "validate": {
                    "source": "functions/validate",
                    "entry_point": "on_object_finalized",
                    "signature": "cloudevent",
                    "trigger": {"type": "storage", "bucket": "landing"},
                },
                "transform": {
                    "source": "functions/transform",
                    "entry_point": "on_data_validated",
                    "signature": "cloudevent",
                    "trigger": {"type": "topic", "topic": "data-validated"},
                },
                "notify": {
                    "source": "functions/notify",
                    "entry_point": "on_alert",
                    "signature": "cloudevent",
                    "trigger": {"type": "topic", "topic": "alerts"},
                    "retry": {"policy": "do_not_retry"},
                },
                "train-http": {
                    "source": "functions/train",
                    "entry_point": "on_http_train_request",
                    "signature": "http",
                    "trigger": {"type": "http"},
                },
            },
        }
    )


@pytest.fixture
def target() -> DeploymentTarget:
    return DeploymentTarget(
        project=PROJECT,
        region=REGION,
        name_prefix=PREFIX,
        buckets={"landing": "land-bucket", "artifacts": "art-bucket"},
    )


def _function(name: str, entry_point: str, trigger: EventTrigger | None = None) -> Function:
    return Function(
        name=f"{PARENT}/functions/cx-{name}",
        state=Function.State.ACTIVE,
        build_config=BuildConfig(runtime="python311", entry_point=entry_point),
        service_config=ServiceConfig(
            service_account_email=f"cx-{name}@{PROJECT}.iam.gserviceaccount.com",
            uri=f"https://cx-{name}-abc-ew.a.run.app",
        ),
        event_trigger=trigger,
    )


def _healthy_functions() -> dict[str, Function]:
    return {
        "validate": _function(
            "validate",
            "on_object_finalized",
            EventTrigger(
                event_type="google.cloud.storage.object.v1.finalized",
                event_filters=[EventFilter(attribute="bucket", value="land-bucket")],
                retry_policy=EventTrigger.RetryPolicy.RETRY_POLICY_RETRY,
                service_account_email=INVOKER,
                pubsub_topic=TRANSPORT_TOPIC,
            ),
        ),
        "transform": _function("transform", "on_data_validated"),
        "notify": _function(
            "notify",
            "on_alert",
            EventTrigger(
                event_type="google.cloud.pubsub.topic.v1.messagePublished",
                retry_policy=EventTrigger.RetryPolicy.RETRY_POLICY_DO_NOT_RETRY,
                service_account_email=INVOKER,
                pubsub_topic=f"projects/{PROJECT}/topics/cx-alerts",
            ),
        ),
        "train-http": _function("train-http", "on_http_train_request"),
    }


def _subscription(name: str, topic: str, **overrides: Any) -> Subscription:
    fields: dict[str, Any] = {
        "name": name,
        "topic": topic,
        "dead_letter_policy": DeadLetterPolicy(
            dead_letter_topic=DEAD_LETTER_TOPIC, max_delivery_attempts=7
        ),
        "retry_policy": RetryPolicy(
            minimum_backoff=datetime.timedelta(seconds=5),
            maximum_backoff=datetime.timedelta(seconds=600),
        ),
    }
    fields.update(overrides)
    return Subscription(**fields)


def _healthy_subscriptions() -> dict[str, Subscription]:
    return {
        PUSH_SUBSCRIPTION: _subscription(
            PUSH_SUBSCRIPTION,
            f"projects/{PROJECT}/topics/cx-data-validated",
            push_config=PushConfig(
                push_endpoint=(
                    "https://cx-transform-abc-ew.a.run.app"
                    f"/projects/{PROJECT}/topics/cx-data-validated"
                ),
                oidc_token=PushConfig.OidcToken(service_account_email=INVOKER),
            ),
        ),
        EVENTARC_SUBSCRIPTION: _subscription(EVENTARC_SUBSCRIPTION, TRANSPORT_TOPIC),
    }


class _Cloud:
    """Spec'd clients answering from dicts that a test can edit before running."""

    def __init__(self) -> None:
        self.functions = _healthy_functions()
        self.subscriptions = _healthy_subscriptions()
        self.functions_client = create_autospec(FunctionServiceClient, instance=True)
        self.subscriber_client = create_autospec(SubscriberClient, instance=True)
        self.publisher_client = create_autospec(PublisherClient, instance=True)
        self.functions_client.get_function.side_effect = self._get_function
        self.subscriber_client.get_subscription.side_effect = self._get_subscription
        self.publisher_client.list_topic_subscriptions.side_effect = self._list_subscriptions

    def _get_function(self, *, name: str) -> Function:
        short = name.rsplit("/functions/cx-", 1)[1]
        if short not in self.functions:
            raise NotFound(name)
        return self.functions[short]

    def _get_subscription(self, *, subscription: str) -> Subscription:
        if subscription not in self.subscriptions:
            raise NotFound(subscription)
        return self.subscriptions[subscription]

    def _list_subscriptions(self, *, topic: str) -> Iterator[str]:
        return iter(name for name, sub in self.subscriptions.items() if sub.topic == topic)

    def verify(self, topology: Topology, target: DeploymentTarget) -> dict[str, tuple[str, ...]]:
        report = verify_deployment(
            topology,
            target,
            functions_client=self.functions_client,
            subscriber_client=self.subscriber_client,
            publisher_client=self.publisher_client,
        )
        return {function.function: function.problems for function in report.functions}


@pytest.fixture
def cloud() -> _Cloud:
    return _Cloud()


def test_a_healthy_deployment_passes(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    report = verify_deployment(
        topology,
        target,
        functions_client=cloud.functions_client,
        subscriber_client=cloud.subscriber_client,
        publisher_client=cloud.publisher_client,
    )

    assert report.ok
    assert [(f.function, f.delivery) for f in report.functions] == [
        ("validate", "eventarc"),
        ("transform", "push"),
        ("notify", "eventarc"),
        ("train-http", "http"),
    ]


def test_it_asks_for_exactly_the_named_resources(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    cloud.verify(topology, target)

    assert cloud.functions_client.get_function.call_args_list == [
        call(name=f"{PARENT}/functions/cx-validate"),
        call(name=f"{PARENT}/functions/cx-transform"),
        call(name=f"{PARENT}/functions/cx-notify"),
        call(name=f"{PARENT}/functions/cx-train-http"),
    ]
    assert cloud.publisher_client.list_topic_subscriptions.call_args_list == [
        call(topic=TRANSPORT_TOPIC)
    ]
    assert cloud.subscriber_client.get_subscription.call_args_list == [
        call(subscription=EVENTARC_SUBSCRIPTION),
        call(subscription=PUSH_SUBSCRIPTION),
    ]


def test_a_missing_function_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    del cloud.functions["transform"]

    problems = cloud.verify(topology, target)

    assert problems["transform"] == ("not deployed",)
    assert problems["validate"] == ()


def test_a_function_that_is_not_active_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    cloud.functions["notify"].state = Function.State.FAILED

    problems = cloud.verify(topology, target)

    assert problems["notify"] == (
        f"state is {Function.State.FAILED!r}, expected {Function.State.ACTIVE!r}",
    )


def test_a_function_running_as_another_account_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    shared = f"cx-validate@{PROJECT}.iam.gserviceaccount.com"
    cloud.functions["train-http"].service_config.service_account_email = shared

    problems = cloud.verify(topology, target)

    assert problems["train-http"] == (
        f"service account is {shared!r}, expected "
        f"'cx-train-http@{PROJECT}.iam.gserviceaccount.com'",
    )


def test_a_wrong_entry_point_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    cloud.functions["transform"].build_config.entry_point = "main"

    problems = cloud.verify(topology, target)

    assert problems["transform"] == ("entry point is 'main', expected 'on_data_validated'",)


def test_a_storage_trigger_on_another_bucket_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    trigger = cloud.functions["validate"].event_trigger
    trigger.event_filters = [EventFilter(attribute="bucket", value="art-bucket")]

    problems = cloud.verify(topology, target)

    assert problems["validate"] == ("trigger bucket is 'art-bucket', expected 'land-bucket'",)


def test_a_wrong_retry_policy_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    trigger = cloud.functions["validate"].event_trigger
    trigger.retry_policy = EventTrigger.RetryPolicy.RETRY_POLICY_DO_NOT_RETRY

    problems = cloud.verify(topology, target)

    assert len(problems["validate"]) == 1
    assert problems["validate"][0].startswith("retry policy is")


def test_an_eventarc_subscription_without_dead_letters_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    cloud.subscriptions[EVENTARC_SUBSCRIPTION] = Subscription(
        name=EVENTARC_SUBSCRIPTION, topic=TRANSPORT_TOPIC
    )

    problems = cloud.verify(topology, target)

    assert problems["validate"][:2] == (
        f"subscription {EVENTARC_SUBSCRIPTION} dead-letter topic is '', "
        f"expected '{DEAD_LETTER_TOPIC}'",
        f"subscription {EVENTARC_SUBSCRIPTION} max delivery attempts is 0, expected 7",
    )


def test_a_push_function_with_an_eventarc_trigger_as_well_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    cloud.functions["transform"].event_trigger = EventTrigger(
        event_type="google.cloud.pubsub.topic.v1.messagePublished"
    )

    problems = cloud.verify(topology, target)

    assert problems["transform"] == (
        "has an Eventarc trigger as well as its push subscription: events arrive twice",
    )


def test_a_missing_push_subscription_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    del cloud.subscriptions[PUSH_SUBSCRIPTION]

    problems = cloud.verify(topology, target)

    assert problems["transform"] == (f"push subscription {PUSH_SUBSCRIPTION} does not exist",)


def test_push_subscription_settings_are_compared_with_the_topology(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    subscription = cloud.subscriptions[PUSH_SUBSCRIPTION]
    subscription.dead_letter_policy.max_delivery_attempts = 5
    subscription.retry_policy.maximum_backoff = datetime.timedelta(seconds=60)
    subscription.push_config.push_endpoint = "https://elsewhere.example.com/"

    problems = cloud.verify(topology, target)

    assert problems["transform"] == (
        "push endpoint 'https://elsewhere.example.com/' is not on the function URI "
        "'https://cx-transform-abc-ew.a.run.app'",
        f"subscription {PUSH_SUBSCRIPTION} max delivery attempts is 5, expected 7",
        f"subscription {PUSH_SUBSCRIPTION} maximum backoff (s) is 60.0, expected 600.0",
    )


def test_an_http_function_with_an_event_trigger_is_reported(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    cloud.functions["train-http"].event_trigger = EventTrigger(event_type="x.y.z")

    problems = cloud.verify(topology, target)

    assert problems["train-http"] == ("HTTP function has an event trigger (x.y.z)",)


def test_report_lines_name_each_function_and_problem(
    cloud: _Cloud, topology: Topology, target: DeploymentTarget
) -> None:
    del cloud.functions["notify"]

    report = verify_deployment(
        topology,
        target,
        functions_client=cloud.functions_client,
        subscriber_client=cloud.subscriber_client,
        publisher_client=cloud.publisher_client,
    )

    assert not report.ok
    assert report.lines()[2:4] == [
        f"FAILED notify (eventarc) {PARENT}/functions/cx-notify",
        "       - not deployed",
    ]


def test_delivery_follows_trigger_and_retry_policy(topology: Topology) -> None:
    assert {name: delivery_for(spec) for name, spec in topology.functions.items()} == {
        "validate": "eventarc",
        "transform": "push",
        "notify": "eventarc",
        "train-http": "http",
    }


def test_verify_deployment_command_exits_1_and_prints_problems(
    mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    topology_file = tmp_path / "topology.yaml"
    topology_file.write_text(
        "runtime: python311\n"
        "buckets: {landing: {}, artifacts: {}}\n"
        "topics: {dead-letter: {}}\n"
        "defaults: {retry: {}, dead_letter_topic: dead-letter, timeout_s: 60, memory: 256Mi,\n"
        "  cpu: '1', max_instances: 1, max_event_age_s: 60}\n"
        "functions:\n"
        "  api: {source: functions/api, entry_point: handle, signature: http,\n"
        "    trigger: {type: http}}\n"
    )
    for name, value in {
        "CASCADE_PROJECT": PROJECT,
        "CASCADE_REGION": REGION,
        "CASCADE_TOPIC_PREFIX": PREFIX,
    }.items():
        monkeypatch.setenv(name, value)
    load_settings.cache_clear()
    functions_class = mocker.patch("google.cloud.functions_v2.FunctionServiceClient", autospec=True)
    mocker.patch("google.pubsub_v1.SubscriberClient", autospec=True)
    mocker.patch("google.pubsub_v1.PublisherClient", autospec=True)
    functions_class.return_value.get_function.side_effect = NotFound("gone")

    try:
        result = CliRunner().invoke(verify_deployment_command, ["--topology", str(topology_file)])
    finally:
        load_settings.cache_clear()

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"FAILED api (http) {PARENT}/functions/cx-api",
        "       - not deployed",
    ]
    functions_class.return_value.get_function.assert_called_once_with(
        name=f"{PARENT}/functions/cx-api"
    )
