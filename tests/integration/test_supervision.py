"""A crashed process is restarted, and a restarted GCS emulator has lost no object.

These tests kill processes, so they do it in a cloud of their own: the shared cloud
never recovers from them while another file's tests run.
"""

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
from cascade.localcloud.fingerprint import code_fingerprint
from cascade.localcloud.message_ids import recorded_floor
from cascade.localcloud.processes import pid_alive, wait_until
from cascade.localcloud.router import STREAM_ACK_DEADLINE_S
from tests.conftest import LocalCloud, running_test_cloud

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """This file's own cloud, whose retries outlast a function's restart by construction:
    0.1 x the topology's backoff (1, 2, 4, 8 s) against a restart of about a second,
    where the shared test cloud's 0.01 (0.1 ... 0.8 s) races a loaded machine."""
    with running_test_cloud(tmp_path_factory.mktemp("private-cloud"), backoff_scale=0.1) as cloud:
        yield cloud


@pytest.fixture
def cloud(private_cloud: LocalCloud) -> LocalCloud:
    """The private cloud, every process back up from what an earlier test killed."""
    private_cloud.wait_healthy(idle=False)
    return private_cloud


def _kill_and_wait_for_restart(cloud: LocalCloud, component: str) -> None:
    before = cloud.refresh_state().components[component]
    assert before.pid is not None
    os.killpg(before.pid, signal.SIGKILL)
    _assert_restarted(cloud, component, before.pid, before.restarts)


def _assert_restarted(cloud: LocalCloud, component: str, pid: int, restarts: int) -> None:
    """``component`` (once ``pid``, restarted ``restarts`` times) runs again in a new
    process, the supervisor counted the restart, and the new process answers."""

    def restarted() -> bool:
        now = cloud.refresh_state().components[component]
        return now.status == "running" and now.pid != pid and now.restarts > restarts

    assert wait_until(restarted, timeout=60, interval=0.2), f"{component} was not restarted"
    assert not pid_alive(pid)
    assert cloud.refresh_state().components[component].restarts == restarts + 1
    assert wait_until(lambda: not cloud.health_problems(), timeout=30, interval=0.2), (
        f"{component} restarted, but the cloud is not healthy: {cloud.health_problems()}"
    )


def _both_steps_done(run: RunRecord) -> bool:
    """The run ended (transform failed it) and validate's own record is final: validate
    creates its result after publishing, so transform may already have ended the run
    while validate's step still reads as running."""
    validate = run.steps.get("validate")
    return run.state != "running" and validate is not None and validate.state != "running"


def _assert_transform_handled_it(run: RunRecord) -> None:
    """The restarted transform process took the event (these datasets have no config)."""
    assert run.steps["validate"].state == "succeeded"
    assert "transform" in run.steps, f"transform never ran: {run.state}, {run.error}"
    assert run.steps["transform"].attempts == 1
    assert "label" in (run.steps["transform"].error or "")


def test_gcs_emulator_restart_loses_no_object(cloud: LocalCloud) -> None:
    prefix = f"ds{uuid.uuid4().hex[:8]}"
    payloads = {f"{prefix}/file-{i}.csv": sample_csv(10, seed=i) for i in range(5)}
    generations = {name: cloud.upload(name, data) for name, data in payloads.items()}

    _kill_and_wait_for_restart(cloud, "gcs-emulator")

    bucket = cloud.storage_client.bucket(cloud.settings.landing_bucket)
    for name, data in payloads.items():
        blob = bucket.get_blob(name)
        assert blob is not None, f"{name} lost in the restart"
        assert blob.generation == generations[name]
        assert blob.download_as_bytes() == data


def test_crashed_function_is_restarted_and_events_still_flow(cloud: LocalCloud) -> None:
    _kill_and_wait_for_restart(cloud, "function:transform")
    name = f"ds{uuid.uuid4().hex[:8]}/after-crash.csv"

    generation = cloud.upload(name, sample_csv(10))

    run = cloud.wait_for_run(cloud.run_id_for(name, generation), _both_steps_done, timeout=90)
    _assert_transform_handled_it(run)


def test_event_sent_while_function_is_down_is_retried_until_it_is_back(
    cloud: LocalCloud,
) -> None:
    """The router tries the dead function, fails, and delivers on a later attempt to the
    process the supervisor restarted. The supervisor is paused until the router has
    failed once, so the function cannot be back before the event reaches it."""
    state = cloud.refresh_state()
    transform = state.components["function:transform"]
    assert transform.pid is not None
    stats_before = cloud.router_stats()

    def counted(counter: str) -> int:
        key = f"transform.{counter}"
        return cloud.router_stats().get(key, 0) - stats_before.get(key, 0)

    name = f"ds{uuid.uuid4().hex[:8]}/while-down.csv"
    os.kill(state.supervisor_pid, signal.SIGSTOP)
    try:
        os.killpg(transform.pid, signal.SIGKILL)
        generation = cloud.upload(name, sample_csv(10))
        assert wait_until(lambda: counted("failed_attempts") >= 1, timeout=60, interval=0.1), (
            "the router never tried to deliver to the dead function"
        )
    finally:
        os.kill(state.supervisor_pid, signal.SIGCONT)

    _assert_restarted(cloud, "function:transform", transform.pid, transform.restarts)
    run = cloud.wait_for_run(cloud.run_id_for(name, generation), _both_steps_done, timeout=90)
    _assert_transform_handled_it(run)
    assert wait_until(lambda: counted("delivered") >= 1, timeout=30, interval=0.1), (
        f"no delivery to the restarted function: {cloud.router_stats()}"
    )
    assert counted("failed_attempts") >= 1
    assert counted("dead_lettered") == 0


def test_up_is_idempotent(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    before = cloud.refresh_state()
    if code_fingerprint(cloud.local) != before.code_fingerprint:
        pytest.skip("the code changed under the running cloud: up restarts it, as it should")
    # Were it restarted all the same, the test functions find their record folder.
    monkeypatch.setenv("CASCADE_TEST_RECORD_DIR", str(cloud.record_dir))

    again = control.up(cloud.local)

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


def _train_lock(cloud: LocalCloud, dataset: str) -> TrainingLock:
    lock, _ = TrainingLockStore(cloud.artifacts, dataset).read()
    return lock


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_train_requests_reach_a_restarted_router_within_the_ack_deadline(
    cloud: LocalCloud,
) -> None:
    """A router killed with a train request in hand, and two requests published while it
    restarts: all three are delivered within the streams' ack deadline, and no training
    lock is left held by a run that never submitted a job."""
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    router = cloud.refresh_state().components["event-router"]
    assert router.pid is not None
    pubsub_port = cloud.local.pubsub_port
    # Stopped, the router cannot read what the emulator streams to it: the request below
    # is leased to it (outstanding on its stream) when it is killed.
    os.killpg(router.pid, signal.SIGSTOP)
    try:
        before = _unread_bytes_from(pubsub_port)
        cloud.publish(TrainRequest(dataset=dataset, request_id="in-hand"))
        assert wait_until(lambda: _unread_bytes_from(pubsub_port) > before, timeout=20), (
            "the emulator never streamed the request to the stopped router"
        )
    finally:
        _kill_and_wait_for_restart(cloud, "event-router")
    restarted_at = time.monotonic()
    for request_id in ("after-1", "after-2"):
        cloud.publish(TrainRequest(dataset=dataset, request_id=request_id))

    # The killed router's lease ends STREAM_ACK_DEADLINE_S after its last extension; the
    # retry backoff is scaled down to about a second here.
    deadline = restarted_at + 2 * STREAM_ACK_DEADLINE_S + 10
    for request_id in ("in-hand", "after-1", "after-2"):
        run_id = run_id_for_request(dataset, request_id)
        run = cloud.wait_for_run(
            run_id,
            until=lambda run: "train" in run.steps,
            timeout=max(deadline - time.monotonic(), 0.1),
        )
        assert run.steps["train"].attempts >= 1

    def lock_free_or_submitted() -> bool:
        active = _train_lock(cloud, dataset).active
        return active is None or active.job_name is not None

    assert wait_until(lock_free_or_submitted, timeout=30, interval=0.2), (
        f"training lock held without a job: {_train_lock(cloud, dataset)}"
    )


def test_message_ids_do_not_come_round_again_after_a_pubsub_emulator_restart(
    cloud: LocalCloud,
) -> None:
    """The emulator numbers messages from 1 again after a restart; the supervisor moves
    its counter past every id the router acted on before the topology's topics exist,
    so a message published after the restart never carries an id already delivered."""
    name = f"ds{uuid.uuid4().hex[:8]}/before-restart.csv"
    cloud.upload(name, sample_csv(10))  # its notification reaches the router
    state_dir = cloud.local.state_dir
    assert wait_until(lambda: recorded_floor(state_dir) > 0, timeout=60, interval=0.2), (
        "the router recorded no message id"
    )
    delivered_before = recorded_floor(state_dir)

    _kill_and_wait_for_restart(cloud, "pubsub-emulator")

    after = cloud.publish(TrainRequest(dataset=f"ds{uuid.uuid4().hex[:8]}", request_id="after"))
    assert int(after) > delivered_before
