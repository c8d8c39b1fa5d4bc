"""A crashed process is restarted, and a restarted GCS emulator has lost no object."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.runs import RunRecord
from cascade.localcloud import control
from cascade.localcloud.processes import pid_alive, wait_until
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration


def _kill_and_wait_for_restart(local_cloud: LocalCloud, component: str) -> None:
    before = local_cloud.refresh_state().components[component]
    assert before.pid is not None
    os.killpg(before.pid, signal.SIGKILL)

    def restarted() -> bool:
        now = local_cloud.refresh_state().components[component]
        return now.status == "running" and now.pid != before.pid and now.restarts > before.restarts

    assert wait_until(restarted, timeout=60, interval=0.2), f"{component} was not restarted"
    assert not pid_alive(before.pid)


def _assert_transform_handled_it(run: RunRecord) -> None:
    """The restarted transform process took the event (these datasets have no config)."""
    assert run.steps["validate"].state == "succeeded"
    assert run.steps["transform"].attempts == 1
    assert "label" in (run.steps["transform"].error or "")


def test_gcs_emulator_restart_loses_no_object(local_cloud: LocalCloud) -> None:
    prefix = f"ds{uuid.uuid4().hex[:8]}"
    payloads = {f"{prefix}/file-{i}.csv": sample_csv(10, seed=i) for i in range(5)}
    generations = {name: local_cloud.upload(name, data) for name, data in payloads.items()}

    _kill_and_wait_for_restart(local_cloud, "gcs-emulator")

    bucket = local_cloud.storage_client.bucket(local_cloud.settings.landing_bucket)
    for name, data in payloads.items():
        blob = bucket.get_blob(name)
        assert blob is not None, f"{name} lost in the restart"
        assert blob.generation == generations[name]
        assert blob.download_as_bytes() == data


def test_crashed_function_is_restarted_and_events_still_flow(local_cloud: LocalCloud) -> None:
    _kill_and_wait_for_restart(local_cloud, "function:transform")
    name = f"ds{uuid.uuid4().hex[:8]}/after-crash.csv"

    generation = local_cloud.upload(name, sample_csv(10))

    def finished(run: RunRecord) -> bool:
        return run.state != "running"

    run = local_cloud.wait_for_run(local_cloud.run_id_for(name, generation), finished, timeout=60)
    _assert_transform_handled_it(run)


def test_event_sent_while_function_is_down_is_retried_until_it_is_back(
    local_cloud: LocalCloud,
) -> None:
    state = local_cloud.refresh_state().components["function:transform"]
    assert state.pid is not None
    os.killpg(state.pid, signal.SIGKILL)
    name = f"ds{uuid.uuid4().hex[:8]}/while-down.csv"

    generation = local_cloud.upload(name, sample_csv(10))
    time.sleep(0.05)

    run = local_cloud.wait_for_run(local_cloud.run_id_for(name, generation), timeout=60)
    _assert_transform_handled_it(run)


def test_up_is_idempotent(local_cloud: LocalCloud) -> None:
    before = local_cloud.refresh_state()

    again = control.up(local_cloud.local)

    assert again.supervisor_pid == before.supervisor_pid
    assert again.status == "ready"
