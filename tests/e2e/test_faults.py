"""Faults injected into a running chain: killed processes, restarted emulators, poison."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from cascade.core.claims import Claim
from cascade.core.clients import make_subscriber
from cascade.core.context import StepContext
from cascade.core.messages import Alert
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord, Trigger
from cascade.localcloud.processes import wait_until
from cascade.localcloud.pubsub_admin import archive_subscription_id
from cascade.steps.reconcile import reconcile
from cascade.transform.catalog import latest_transform
from tests.conftest import LocalCloud
from tests.e2e.conftest import Scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _kill(cloud: LocalCloud, component: str) -> int:
    """SIGKILL a local-cloud process group; its pid."""
    pid = cloud.refresh_state().components[component].pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    return pid


def _wait_for_restart(cloud: LocalCloud, component: str, old_pid: int) -> None:
    def restarted() -> bool:
        now = cloud.refresh_state().components[component]
        return now.status == "running" and now.pid not in (None, old_pid)

    assert wait_until(restarted, timeout=90, interval=0.2), f"{component} was not restarted"


def test_a_function_killed_in_the_middle_of_a_step_is_restarted_and_the_run_finishes(
    scenario: Scenario,
) -> None:
    run_id = scenario.upload(rows=200_000, seed=5)
    scenario.wait(
        run_id,
        lambda run: "transform" in run.steps and run.steps["transform"].state == "running",
        timeout=120,
    )

    old_pid = _kill(scenario.cloud, "function:transform")  # mid-transform: no heartbeat now
    _wait_for_restart(scenario.cloud, "function:transform", old_pid)
    run = scenario.wait(run_id, timeout=300)

    assert run.state == "succeeded", run.error
    assert run.steps["transform"].attempts == 2  # the redelivery took the step over
    found = scenario.cloud.artifacts.read_model(RunPaths(run_id).claim("transform"), Claim)
    assert found is not None
    assert (found[0].takeovers, found[0].state) == (1, "done")
    assert len(scenario.jobs()) == 1


def test_emulators_restarted_mid_run_lose_no_accepted_file(scenario: Scenario) -> None:
    run_ids = [scenario.upload(rows=1000, seed=seed) for seed in (11, 12, 13)]
    scenario.wait(run_ids[0], lambda run: "validate" in run.steps, timeout=60)

    restarts = [
        (component, _kill(scenario.cloud, component))
        for component in ("pubsub-emulator", "gcs-emulator")
    ]
    for component, old_pid in restarts:
        _wait_for_restart(scenario.cloud, component, old_pid)
    ctx = StepContext.from_settings(scenario.cloud.settings)
    reconciled: set[str] = set()

    def all_finished() -> bool:
        report = reconcile(ctx, stale_after=timedelta(seconds=10), dataset=scenario.dataset)
        reconciled.update(report.uploads_started + report.runs_resumed)
        runs = [scenario.cloud.ledger.get(run_id) for run_id in run_ids]
        return all(run is not None and run.state != "running" for run in runs)

    assert wait_until(all_finished, timeout=300, interval=5), "runs did not finish"
    scenario.wait_for_jobs_to_end()
    runs = [scenario.wait(run_id) for run_id in run_ids]

    assert all(run.state == "succeeded" for run in runs), [run.error for run in runs]
    final = latest_transform(scenario.cloud.artifacts, scenario.dataset)
    assert final is not None
    assert final.files == 3
    serving = scenario.serving()
    assert serving is not None
    assert serving.traffic
    assert scenario.predict().status_code == 200
    print(f"reconcile resumed or started: {sorted(reconciled)}")


def _alerts_for(cloud: LocalCloud, run_id: str, timeout: float = 60) -> list[Alert]:
    subscriber = make_subscriber(cloud.settings)
    subscription = subscriber.subscription_path(
        cloud.settings.project, archive_subscription_id(cloud.settings, "alerts")
    )
    found: list[Alert] = []
    deadline = time.monotonic() + timeout
    while not found and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
        for received in response.received_messages:
            subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
            alert = Alert.model_validate_json(received.message.data)
            if alert.run_id == run_id:
                found.append(alert)
    return found


def test_a_poison_message_is_dead_lettered_after_the_maximum_attempts_and_alerted(
    scenario: Scenario,
) -> None:
    cloud = scenario.cloud
    run_id = f"{scenario.dataset}-poison"
    now = datetime.now(UTC)
    cloud.ledger.ensure(
        RunRecord(
            run_id=run_id,
            dataset=scenario.dataset,
            created_at=now,
            updated_at=now,
            trigger=Trigger(kind="request", request_id="poison"),
        )
    )
    # The flaky test function fails every delivery of this message, as a function whose
    # code raises on it would: HTTP 500, every time.
    message_id = cloud.bus._publisher.publish(
        cloud.settings.topic_path("test-flaky"),
        json.dumps({"dataset": scenario.dataset}).encode(),
        fail_times="1000",
        dataset=scenario.dataset,
        run_id=run_id,
        message_type="TrainRequest",
    ).result(timeout=10)
    scenario.sent += 1

    run = scenario.wait(run_id, timeout=120)
    alerts = _alerts_for(cloud, run_id)

    attempts = (cloud.record_dir / "flaky" / f"{message_id}.jsonl").read_text().splitlines()
    assert len(attempts) == 5  # the topology's max_delivery_attempts, each reaching it
    assert run.state == "failed"
    assert run.error is not None
    assert "dead-lettered by eventarc-flaky after 5 delivery attempts" in run.error
    assert "HTTP 500" in run.error
    [alert] = [alert for alert in alerts if alert.step == "dead-letter"]
    assert alert.severity == "ERROR"
    assert alert.details["delivery_attempts"] == 5
    letters = cloud.artifacts.list_names("dead-letters/")
    assert any(
        json.loads(cloud.artifacts.read(name).data)["run_id"] == run_id  # type: ignore[union-attr]
        for name in letters
    )
