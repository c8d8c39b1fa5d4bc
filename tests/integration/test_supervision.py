"""A crashed process is restarted, and a restarted GCS emulator has lost no object."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.messages import TrainRequest
from cascade.core.runs import RunRecord, run_id_for_request
from cascade.jobs.lock import TrainingLock, TrainingLockStore
from cascade.localcloud import control
from cascade.localcloud.processes import pid_alive, wait_until
from cascade.localcloud.router import STREAM_ACK_DEADLINE_S
from tests.conftest import LocalCloud, running_test_cloud

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


@pytest.fixture(scope="module")
def patient_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """A private cloud whose retries outlast a function's restart by construction: 0.1 x
    the topology's backoff (1, 2, 4, 8 s) against a restart of about a second, where the
    shared test cloud's 0.01 (0.1 ... 0.8 s) races a loaded machine."""
    with running_test_cloud(tmp_path_factory.mktemp("patient-cloud"), backoff_scale=0.1) as cloud:
        yield cloud


def test_event_sent_while_function_is_down_is_retried_until_it_is_back(
    patient_cloud: LocalCloud,
) -> None:
    state = patient_cloud.refresh_state().components["function:transform"]
    assert state.pid is not None
    os.killpg(state.pid, signal.SIGKILL)
    name = f"ds{uuid.uuid4().hex[:8]}/while-down.csv"

    generation = patient_cloud.upload(name, sample_csv(10))

    run = patient_cloud.wait_for_run(patient_cloud.run_id_for(name, generation), timeout=90)
    _assert_transform_handled_it(run)


def test_up_is_idempotent(local_cloud: LocalCloud) -> None:
    before = local_cloud.refresh_state()

    again = control.up(local_cloud.local)

    assert again.supervisor_pid == before.supervisor_pid
    assert again.status == "ready"


def _unread_bytes_from(port: int) -> int:
    """Bytes that arrived from loopback ``port`` and that no process has read yet."""
    unread = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # gRPC may use IPv4-mapped IPv6
        path = Path(table)
        lines = path.read_text().splitlines()[1:] if path.exists() else []
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":  # ESTABLISHED
                unread += int(fields[4].split(":")[1], 16)
    return unread


def _train_lock(local_cloud: LocalCloud, dataset: str) -> TrainingLock:
    lock, _ = TrainingLockStore(local_cloud.artifacts, dataset).read()
    return lock


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_train_requests_reach_a_restarted_router_within_the_ack_deadline(
    local_cloud: LocalCloud,
) -> None:
    """A router killed with a train request in hand, and two requests published while it
    restarts: all three are delivered within the streams' ack deadline, and no training
    lock is left held by a run that never submitted a job."""
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    router = local_cloud.refresh_state().components["event-router"]
    assert router.pid is not None
    pubsub_port = local_cloud.local.pubsub_port
    # Stopped, the router cannot read what the emulator streams to it: the request below
    # is leased to it (outstanding on its stream) when it is killed.
    os.killpg(router.pid, signal.SIGSTOP)
    try:
        before = _unread_bytes_from(pubsub_port)
        local_cloud.publish(TrainRequest(dataset=dataset, request_id="in-hand"))
        assert wait_until(lambda: _unread_bytes_from(pubsub_port) > before, timeout=20), (
            "the emulator never streamed the request to the stopped router"
        )
    finally:
        _kill_and_wait_for_restart(local_cloud, "event-router")
    restarted_at = time.monotonic()
    for request_id in ("after-1", "after-2"):
        local_cloud.publish(TrainRequest(dataset=dataset, request_id=request_id))

    # The killed router's lease ends STREAM_ACK_DEADLINE_S after its last extension; the
    # retry backoff is scaled down to a fraction of a second in tests.
    deadline = restarted_at + 2 * STREAM_ACK_DEADLINE_S + 10
    for request_id in ("in-hand", "after-1", "after-2"):
        run_id = run_id_for_request(dataset, request_id)
        run = local_cloud.wait_for_run(
            run_id,
            until=lambda run: "train" in run.steps,
            timeout=max(deadline - time.monotonic(), 0.1),
        )
        assert run.steps["train"].attempts >= 1

    def lock_free_or_submitted() -> bool:
        active = _train_lock(local_cloud, dataset).active
        return active is None or active.job_name is not None

    assert wait_until(lock_free_or_submitted, timeout=30, interval=0.2), (
        f"training lock held without a job: {_train_lock(local_cloud, dataset)}"
    )
