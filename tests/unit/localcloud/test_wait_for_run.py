"""LocalCloudClient.wait_for_run: how often it polls a run record while it waits.

Each poll reads run.json and lists the run's claims and results; on the local storage
emulator a listing walks the whole bucket, so a wait that polls at its first pace for a
minute keeps the emulator busy and slows the steps it waits for. Polls start at
``interval`` and back off to ``max_interval``; the last one is at the deadline."""

from __future__ import annotations

from unittest import mock

import google.cloud.storage as storage
import pytest

from cascade.core.runs import RunRecord
from cascade.core.settings import Settings
from cascade.localcloud import client as client_module
from cascade.localcloud.client import LocalCloudClient, RunTimeoutError
from tests.unit.run_records import upload_run


class _Clock:
    """time.monotonic and time.sleep on a clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class _Ledger:
    """Answers a running run until ``done_at`` on the clock, then a succeeded one."""

    def __init__(self, clock: _Clock, done_at: float | None) -> None:
        self.clock, self.done_at = clock, done_at
        self.polls: list[float] = []

    def get(self, run_id: str) -> RunRecord:
        self.polls.append(self.clock.now)
        done = self.done_at is not None and self.clock.now >= self.done_at
        return upload_run(run_id, state="succeeded" if done else "running")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    found = _Clock()
    monkeypatch.setattr(client_module, "time", found)
    # the run records come from _Ledger: the storage client is never called
    unused = mock.create_autospec(storage.Client, instance=True)
    monkeypatch.setattr(client_module, "make_storage_client", lambda settings: unused)
    return found


def _client(clock: _Clock, done_at: float | None) -> tuple[LocalCloudClient, _Ledger]:
    client = LocalCloudClient(Settings())
    ledger = _Ledger(clock, done_at)
    client.ledger = ledger  # type: ignore[assignment]
    return client, ledger


def test_polls_back_off_to_the_longest_pause_and_the_last_is_at_the_deadline(
    clock: _Clock,
) -> None:
    client, ledger = _client(clock, done_at=None)

    with pytest.raises(RunTimeoutError, match="not done after 60"):
        client.wait_for_run("r", timeout=60, interval=0.1, max_interval=1.0)

    assert clock.sleeps[0] == pytest.approx(0.1)
    backing_off = clock.sleeps[:-1]  # the last pause ends at the deadline
    assert backing_off == sorted(backing_off)
    assert max(clock.sleeps) == pytest.approx(1.0)
    assert ledger.polls[-1] == pytest.approx(1060.0)  # one last look at the deadline
    assert len(ledger.polls) < 75  # a poll every 0.1 s would be 600


def test_a_run_that_ends_is_seen_within_the_longest_pause(clock: _Clock) -> None:
    client, ledger = _client(clock, done_at=1030.0)

    record = client.wait_for_run("r", timeout=60, interval=0.1, max_interval=1.0)

    assert record.state == "succeeded"
    assert 1030.0 <= ledger.polls[-1] <= 1031.0


def test_a_longest_pause_under_the_first_never_slows_the_first(clock: _Clock) -> None:
    client, _ = _client(clock, done_at=None)

    with pytest.raises(RunTimeoutError):
        client.wait_for_run("r", timeout=2, interval=0.5, max_interval=0.1)

    assert set(clock.sleeps[:-1]) == {0.5}
