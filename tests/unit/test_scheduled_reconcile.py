"""The reconcile sweep on a schedule: the topology's schedule, Cloud Scheduler's message
(Terraform) and the local scheduler's, and the function that sweeps on each."""

from __future__ import annotations

import base64
import json
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, InvalidConfigError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.messages import ReconcileRequest
from cascade.core.runs import run_id_for_object
from cascade.core.settings import Settings
from cascade.core.topology import ScheduleSpec, load_topology, parse_topology
from cascade.localcloud.scheduler import LocalScheduler, next_tick, schedule_message
from cascade.steps.reconcile import handle_reconcile_request
from tests.unit.conftest import Clock

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = load_topology(REPO / "infra" / "topology.yaml")
SETTINGS = Settings(project="p", topic_prefix="cascade-")
T0 = datetime(2026, 11, 30, 12, 50, 30, tzinfo=UTC)


class _Publisher:
    """Records publishes like PublisherClient.publish; fails the first ``failures``."""

    def __init__(self, failures: int = 0) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.failures = failures

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
        future: Future[str] = Future()
        if self.failures:
            self.failures -= 1
            future.set_exception(ConnectionError("emulator down"))
            return future
        self.published.append((topic, data, attributes))
        future.set_result(str(len(self.published)))
        return future


class _Time:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _pubsub_event(body: bytes, message_id: str = "42") -> tuple[dict[str, Any], dict[str, Any]]:
    """What the reconcile function receives: Eventarc's messagePublished CloudEvent."""
    attributes = {
        "specversion": "1.0",
        "id": message_id,
        "source": "//pubsub.googleapis.com/projects/p/topics/cascade-reconcile-requests",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
    }
    data = {
        "message": {
            "data": base64.b64encode(body).decode(),
            "messageId": message_id,
            "attributes": {"origin": "cloud-scheduler", "schedule": "reconcile"},
        },
        "subscription": "projects/p/subscriptions/eventarc-reconcile",
    }
    return attributes, data


def test_the_topology_sweeps_on_a_schedule_into_the_reconcile_function() -> None:
    schedule = TOPOLOGY.schedules["reconcile"]
    function = TOPOLOGY.functions["reconcile"]

    assert function.trigger.type == "topic"
    assert function.trigger.topic == schedule.topic
    assert function.retry.policy == "do_not_retry"  # the next tick is the retry
    assert function.max_instances == 1
    assert ReconcileRequest.model_validate(schedule.data).stale_after_s > 0


def test_a_schedule_naming_an_unknown_topic_or_a_bad_cron_is_refused() -> None:
    document = yaml_document()
    document["schedules"] = {"sweep": {"topic": "nowhere", "schedule": "*/10 * * * *"}}
    with pytest.raises(InvalidConfigError, match="schedule sweep: unknown topic 'nowhere'"):
        parse_topology(document)
    document["schedules"] = {"sweep": {"topic": "alerts", "schedule": "every ten minutes"}}
    with pytest.raises(InvalidConfigError, match="schedule"):
        parse_topology(document)


def yaml_document() -> dict[str, Any]:
    import yaml

    document: dict[str, Any] = yaml.safe_load((REPO / "infra" / "topology.yaml").read_text())
    return document


def test_next_tick_follows_the_cron_in_its_time_zone() -> None:
    every_ten = ScheduleSpec(topic="t", schedule="*/10 * * * *")
    nine_in_paris = ScheduleSpec(topic="t", schedule="0 9 * * *", time_zone="Europe/Paris")

    assert next_tick(every_ten, T0) == datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    assert next_tick(every_ten, datetime(2026, 11, 30, 13, 0, tzinfo=UTC)) == datetime(
        2026, 11, 30, 13, 10, tzinfo=UTC
    )
    # 09:00 in Paris is 08:00 UTC in winter.
    assert next_tick(nine_in_paris, T0) == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


RECONCILE_ONLY = {"reconcile": TOPOLOGY.schedules["reconcile"]}
"""The topology's reconcile schedule alone: the tests below follow one schedule's ticks."""


def test_every_schedule_of_the_topology_publishes_on_its_own_cron() -> None:
    time = _Time(T0)
    publisher = _Publisher()
    scheduler = LocalScheduler(TOPOLOGY.schedules, SETTINGS, publisher, clock=time)
    time.now = datetime(2026, 11, 30, 13, 0, 1, tzinfo=UTC)  # reconcile's, batch-collect's
    scheduler.run_due()  # and the hourly extract's
    time.now = datetime(2026, 11, 30, 13, 5, 1, tzinfo=UTC)  # batch-collect's only
    scheduler.run_due()

    schedules = [attributes["schedule"] for _, _, attributes in publisher.published]
    assert sorted(schedules) == ["batch-collect", "batch-collect", "extract", "reconcile"]


def test_the_local_scheduler_publishes_the_schedules_data_at_each_tick() -> None:
    time = _Time(T0)
    publisher = _Publisher()
    scheduler = LocalScheduler(RECONCILE_ONLY, SETTINGS, publisher, clock=time)

    assert scheduler.run_due() == datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    assert publisher.published == []  # nothing before the first tick

    time.now = datetime(2026, 11, 30, 13, 0, 1, tzinfo=UTC)
    assert scheduler.run_due() == datetime(2026, 11, 30, 13, 10, tzinfo=UTC)

    topic, data, attributes = publisher.published[0]
    assert topic == "projects/p/topics/cascade-reconcile-requests"
    assert json.loads(data) == TOPOLOGY.schedules["reconcile"].data
    assert attributes == {"origin": "cloud-scheduler", "schedule": "reconcile"}
    assert len(publisher.published) == 1


def test_ticks_missed_while_down_are_not_published_late() -> None:
    time = _Time(T0)
    publisher = _Publisher()
    scheduler = LocalScheduler(RECONCILE_ONLY, SETTINGS, publisher, clock=time)

    time.now = T0 + timedelta(hours=1)  # six ticks passed while nobody ran
    scheduler.run_due()

    assert len(publisher.published) == 1
    assert scheduler.jobs[0].due == next_tick(TOPOLOGY.schedules["reconcile"], time.now)


def test_a_failed_publish_is_retried_before_the_next_tick_and_then_replaced_by_it() -> None:
    time = _Time(T0)
    publisher = _Publisher(failures=2)
    scheduler = LocalScheduler(RECONCILE_ONLY, SETTINGS, publisher, period_s=10, clock=time)

    time.now = T0 + timedelta(seconds=10)
    retry_at = scheduler.run_due()
    assert publisher.published == []
    assert retry_at == time.now + timedelta(seconds=1)
    assert scheduler.jobs[0].last_error is not None

    time.now = retry_at
    scheduler.run_due()  # the second failure
    time.now = T0 + timedelta(seconds=12)
    scheduler.run_due()

    assert len(publisher.published) == 1
    assert scheduler.jobs[0].last_error is None
    assert scheduler.jobs[0].due == time.now + timedelta(seconds=10)


def test_the_period_setting_replaces_every_cron() -> None:
    time = _Time(T0)
    publisher = _Publisher()
    scheduler = LocalScheduler(RECONCILE_ONLY, SETTINGS, publisher, period_s=2, clock=time)

    for _ in range(3):
        time.now += timedelta(seconds=2)
        scheduler.run_due()

    assert len(publisher.published) == 3


def test_the_local_scheduler_writes_when_it_last_published(tmp_path: Path) -> None:
    time = _Time(T0)
    state = tmp_path / "scheduler.json"
    scheduler = LocalScheduler(
        TOPOLOGY.schedules,
        SETTINGS,
        _Publisher(),
        period_s=5,
        clock=time,
        state_file=state,
    )
    assert json.loads(state.read_text())["reconcile"]["last_published_at"] is None

    time.now += timedelta(seconds=5)
    scheduler.run_due()

    written = json.loads(state.read_text())["reconcile"]
    assert written["last_published_at"] == time.now.isoformat()
    assert written["next_at"] == (time.now + timedelta(seconds=5)).isoformat()
    assert written["topic"] == "reconcile-requests"


def test_the_message_body_is_what_cloud_scheduler_is_told_to_publish() -> None:
    scheduler_tf = (REPO / "infra" / "scheduler.tf").read_text()
    data, attributes = schedule_message("reconcile", TOPOLOGY.schedules["reconcile"])

    assert "data       = base64encode(jsonencode(try(each.value.data, {})))" in scheduler_tf
    assert 'origin   = "cloud-scheduler"' in scheduler_tf
    assert "schedule = each.key" in scheduler_tf
    assert json.loads(data) == TOPOLOGY.schedules["reconcile"].data
    assert attributes == {"origin": "cloud-scheduler", "schedule": "reconcile"}


def test_a_scheduled_request_sweeps_with_its_stale_after(
    step_context: StepContext, clock: Clock
) -> None:
    landing = MemoryArtifactStore("cascade-landing", clock=clock)
    step_context.landing = landing
    generation = landing.write("credit/lost.csv", b"a,b\n1,2\n")
    assert generation is not None
    clock.advance(61)
    attributes, data = _pubsub_event(b'{"stale_after_s": 60}')

    report = handle_reconcile_request(step_context, attributes, data)

    run_id = run_id_for_object("credit", "cascade-landing", "credit/lost.csv", generation)
    assert report.uploads_started == [run_id]
    assert step_context.ledger.get(run_id) is not None


def test_a_younger_object_is_left_to_its_own_event(step_context: StepContext, clock: Clock) -> None:
    landing = MemoryArtifactStore("cascade-landing", clock=clock)
    step_context.landing = landing
    landing.write("credit/new.csv", b"a,b\n1,2\n")
    clock.advance(59)
    attributes, data = _pubsub_event(b'{"stale_after_s": 60}')

    report = handle_reconcile_request(step_context, attributes, data)

    assert report.uploads_started == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"not json", "invalid ReconcileRequest"),
        (b'{"stale_after_s": 0}', "stale_after_s"),
        (b'{"stale_after_s": "soon"}', "stale_after_s"),
        (b'{"stale_after_s": 99999999}', "stale_after_s"),
        (b'{"dataset": "../etc"}', "dataset"),
        (b'{"run_id": "x"}', "run_id"),
    ],
    ids=["not-json", "zero", "text", "beyond-a-week", "path-dataset", "extra-field"],
)
def test_a_bad_request_is_refused_naming_the_field(
    step_context: StepContext, body: bytes, named: str
) -> None:
    attributes, data = _pubsub_event(body)

    with pytest.raises(BadRequestError, match=named):
        handle_reconcile_request(step_context, attributes, data)
