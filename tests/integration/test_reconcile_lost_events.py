"""An upload whose event was lost is recovered by reconcile, once; the router reconnects."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.clients import make_subscriber
from cascade.core.context import StepContext
from cascade.core.runs import RunRecord
from cascade.steps.reconcile import reconcile
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration


def test_upload_whose_event_was_lost_is_recovered_by_reconcile(local_cloud: LocalCloud) -> None:
    subscriber = make_subscriber(local_cloud.settings)
    project = local_cloud.settings.project
    subscription = subscriber.subscription_path(project, "eventarc-validate")
    topic = f"projects/{project}/topics/{local_cloud.local.notifications_topic}"
    subscriber.delete_subscription(subscription=subscription)  # the event will be lost
    name = f"ds{uuid.uuid4().hex[:8]}/lost-event.csv"
    generation = local_cloud.upload(name, sample_csv(300))
    run_id = local_cloud.run_id_for(name, generation)
    time.sleep(1)
    subscriber.create_subscription(
        request={"name": subscription, "topic": topic, "ack_deadline_seconds": 60}
    )
    assert local_cloud.ledger.get(run_id) is None

    report = reconcile(StepContext.from_settings(local_cloud.settings), stale_after=timedelta(0))

    assert run_id in report.uploads_started

    def validated(run: RunRecord) -> bool:
        return "validate" in run.steps and run.steps["validate"].state != "running"

    run = local_cloud.wait_for_run(run_id, validated, timeout=60)
    assert run.steps["validate"].state == "succeeded", run.steps["validate"].error
    again = reconcile(StepContext.from_settings(local_cloud.settings), stale_after=timedelta(0))
    assert run_id not in again.uploads_started
    assert local_cloud.ledger.get(run_id).steps["validate"].attempts == 1  # type: ignore[union-attr]
