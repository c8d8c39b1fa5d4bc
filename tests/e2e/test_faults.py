"""Faults injected into a running chain: killed processes, restarted emulators, poison."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from cascade.core.claims import Claim, ClaimStore
from cascade.core.clients import make_subscriber
from cascade.core.messages import Alert
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord, Trigger
from cascade.localcloud.processes import wait_until
from cascade.localcloud.pubsub_admin import archive_subscription_id
from cascade.transform.catalog import latest_transform, read_transform
from tests.conftest import LocalCloud
from tests.e2e.conftest import NO_THRESHOLDS, Scenario

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
    assert found[0].takeovers == 1
    done = ClaimStore(scenario.cloud.artifacts).get(run_id, "transform")
    assert done is not None
    assert (done.state, done.attempts) == ("done", 2)
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
    # No `cascade reconcile` by hand: the scheduled sweep finds what the restarts lost.
    runs = [scenario.wait(run_id, timeout=300) for run_id in run_ids]
    scenario.wait_for_jobs_to_end()

    assert all(run.state == "succeeded" for run in runs), [run.error for run in runs]
    final = latest_transform(scenario.cloud.artifacts, scenario.dataset)
    assert final is not None
    assert final.files == 3
    serving = scenario.serving()
    assert serving is not None
    assert serving.traffic
    assert scenario.predict().status_code == 200
    print(f"reconcile sweeps so far: {_sweeps(scenario.cloud)}")


BURST = 30
FAULTS = ("function:validate", "event-router", "pubsub-emulator", "gcs-emulator")


def _upload_until_stored(scenario: Scenario, seed: int) -> None:
    """Upload one file, again while the GCS emulator is down (as a client retries)."""
    failures: list[str] = []

    def stored() -> bool:
        try:
            scenario.upload(rows=300, seed=seed)
        except Exception as error:
            failures.append(type(error).__name__)
            return False
        return True

    assert wait_until(stored, timeout=120, interval=0.5), f"upload {seed} failed: {failures}"
    scenario.upload_retries += len(failures)


def _sweeps(cloud: LocalCloud) -> dict[str, int]:
    """What the scheduled reconcile function did, from its structured log lines."""
    totals = {
        "sweeps": 0,
        "uploads_started": 0,
        "runs_resumed": 0,
        "messages_republished": 0,
    }
    log = cloud.local.state_dir / "logs" / "function-reconcile.log"
    for line in log.read_text().splitlines() if log.is_file() else []:
        if '"reconciled:' not in line and "reconciled:" not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        totals["sweeps"] += 1
        totals["uploads_started"] += len(entry.get("uploads_started", []))
        totals["runs_resumed"] += len(entry.get("runs_resumed", []))
        totals["messages_republished"] += int(entry.get("messages_republished", 0))
    return totals


def test_a_burst_of_uploads_survives_killing_validate_the_router_and_each_emulator(
    scenario: Scenario,
) -> None:
    scenario.configure(NO_THRESHOLDS)
    cloud = scenario.cloud
    swept_before = _sweeps(cloud)
    per_fault = BURST // len(FAULTS)
    seeds = iter(range(100, 100 + BURST))
    killed: list[str] = []
    for component in FAULTS:
        for _ in range(per_fault // 2):
            _upload_until_stored(scenario, next(seeds))
        old_pid = _kill(cloud, component)
        killed.append(component)
        for _ in range(per_fault - per_fault // 2):  # while it is down or restarting
            _upload_until_stored(scenario, next(seeds))
        _wait_for_restart(cloud, component, old_pid)
    for seed in seeds:
        _upload_until_stored(scenario, seed)

    landing = cloud.landing
    landed = list(landing.list_objects(f"{scenario.dataset}/"))
    upload_runs = {cloud.run_id_for(info.name, info.generation): info.name for info in landed}

    def every_file_has_a_terminal_run() -> bool:
        runs = [cloud.ledger.get(run_id) for run_id in upload_runs]
        return all(run is not None and run.state != "running" for run in runs)

    # No `cascade reconcile` by hand: the scheduled sweep is the only help there is.
    assert wait_until(every_file_has_a_terminal_run, timeout=600, interval=1), {
        run_id: None if (run := cloud.ledger.get(run_id)) is None else run.state
        for run_id in upload_runs
    }
    runs = scenario.settle(timeout=600)
    jobs = sorted(scenario.jobs(), key=lambda job: job.created_at)
    uploads = [run for run in runs if run.run_id in upload_runs]
    accepted = sorted(
        upload_runs[run.run_id] for run in uploads if "manifest" in run.steps["validate"].outputs
    )
    final = latest_transform(cloud.artifacts, scenario.dataset)
    assert final is not None
    spec = read_transform(cloud.artifacts, final.run_id)
    assert spec is not None
    snapshot = sorted(f.uri.removeprefix(f"gs://{landing.bucket_name}/") for f in spec.snapshot)
    sweeps = {key: value - swept_before[key] for key, value in _sweeps(cloud).items()}
    totals = {
        "uploads": BURST,
        "upload retries": scenario.upload_retries,
        "landed objects": len(landed),
        "runs": len(runs),
        "succeeded": sum(run.state == "succeeded" for run in runs),
        "failed": sum(run.state == "failed" for run in runs),
        "accepted files": len(accepted),
        "files in final snapshot": len(snapshot),
        "training jobs": len(jobs),
        "processes killed": len(killed),
        **sweeps,
    }
    print("burst under faults: " + ", ".join(f"{key} {value}" for key, value in totals.items()))

    assert len(landed) == BURST
    assert len(uploads) == BURST
    assert all(run.state in ("succeeded", "failed") for run in runs)
    assert accepted == sorted(info.name for info in landed), "a good file was not accepted"
    assert snapshot == accepted, "the final snapshot misses an accepted file"
    for earlier, later in itertools.pairwise(jobs):
        assert earlier.finished_at is not None
        assert later.created_at >= earlier.finished_at, "two training jobs overlapped"
    assert jobs[-1].spec.transform_spec_uri == final.transform_uri
    assert sweeps["sweeps"] > 0


def _alerts_for(
    cloud: LocalCloud, run_id: str, until: Callable[[list[Alert]], bool], timeout: float = 60
) -> list[Alert]:
    """The alerts of ``run_id`` pulled from the alerts topic's archive subscription until
    ``until`` holds for them (other runs' alerts are acknowledged and passed over)."""
    subscriber = make_subscriber(cloud.settings)
    subscription = subscriber.subscription_path(
        cloud.settings.project, archive_subscription_id(cloud.settings, "alerts")
    )
    found: list[Alert] = []
    deadline = time.monotonic() + timeout
    while not until(found) and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
        if not response.received_messages:
            continue
        subscriber.acknowledge(
            subscription=subscription,
            ack_ids=[received.ack_id for received in response.received_messages],
        )
        for received in response.received_messages:
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

    # 240 s, not 120: after the emulator restarts of the test before, a first publish to
    # a topic was once seen to stall 60 s in the emulator (published at once, delivered
    # and acknowledged to its publisher a minute later), here twice: the message and its
    # dead letter. Five attempts and the dead letter take ~30 s otherwise.
    run = scenario.wait(run_id, timeout=240)
    alerts = _alerts_for(cloud, run_id, lambda got: any(a.step == "dead-letter" for a in got))

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
    # The dead-letters function announced the end it wrote: the run has its report.
    assert "dead-lettered by eventarc-flaky" in scenario.report(run_id)
