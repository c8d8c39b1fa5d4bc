"""An upload whose event was lost is recovered by reconcile, once; the router reconnects."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import timedelta

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.clients import make_subscriber
from cascade.core.context import StepContext
from cascade.core.runs import RunRecord
from cascade.localcloud.processes import wait_until
from cascade.localcloud.pubsub_admin import ACK_DEADLINE_S
from cascade.steps.reconcile import reconcile
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration


def _recorded_by_storage_trigger(local_cloud: LocalCloud, name: str) -> bool:
    """The test recorder, another storage trigger, got the object's notification."""
    for path in (local_cloud.record_dir / "recorder-storage").glob("*.json"):
        with contextlib.suppress(ValueError):  # half-written
            if json.loads(path.read_text())["data"]["name"] == name:
                return True
    return False


def _validated(run: RunRecord) -> bool:
    return "validate" in run.steps and run.steps["validate"].state != "running"


def test_upload_whose_event_was_lost_is_recovered_by_reconcile(local_cloud: LocalCloud) -> None:
    subscriber = make_subscriber(local_cloud.settings)
    project = local_cloud.settings.project
    subscription = subscriber.subscription_path(project, "eventarc-validate")
    topic = f"projects/{project}/topics/{local_cloud.local.notifications_topic}"
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    subscriber.delete_subscription(subscription=subscription)  # the event will be lost
    try:
        name = f"{dataset}/lost-event.csv"
        generation = local_cloud.upload(name, sample_csv(300))
        run_id = local_cloud.run_id_for(name, generation)
        # The notification was published (so lost for validate): another trigger has it.
        assert wait_until(lambda: _recorded_by_storage_trigger(local_cloud, name), timeout=30), (
            f"the notification of {name} never reached recorder-storage"
        )
    finally:  # as the local cloud provisions it
        subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": ACK_DEADLINE_S}
        )
    assert local_cloud.ledger.get(run_id) is None

    report = reconcile(
        StepContext.from_settings(local_cloud.settings), stale_after=timedelta(0), dataset=dataset
    )

    assert run_id in report.uploads_started
    run = local_cloud.wait_for_run(run_id, _validated, timeout=60)
    assert run.steps["validate"].state == "succeeded", run.steps["validate"].error
    again = reconcile(
        StepContext.from_settings(local_cloud.settings), stale_after=timedelta(0), dataset=dataset
    )
    assert run_id not in again.uploads_started
    assert local_cloud.ledger.get(run_id).steps["validate"].attempts == 1  # type: ignore[union-attr]

    # The router streams the new subscription: the next upload's event reaches validate.
    name = f"{dataset}/after-reconnect.csv"
    generation = local_cloud.upload(name, sample_csv(300, seed=2))
    run = local_cloud.wait_for_run(local_cloud.run_id_for(name, generation), _validated)
    assert run.steps["validate"].state == "succeeded", run.steps["validate"].error
