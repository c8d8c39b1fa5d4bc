"""A client of a running local cloud: upload data, publish requests, follow runs."""

from __future__ import annotations

import time
from collections.abc import Callable

import google.cloud.storage as storage

from cascade.core.bus import MessageBus
from cascade.core.clients import make_publisher, make_storage_client
from cascade.core.messages import StepMessage
from cascade.core.runs import RunLedger, RunRecord, run_id_for_object
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.steps.validate import dataset_of_object

__all__ = ["WAIT_MAX_INTERVAL_S", "LocalCloudClient", "RunTimeoutError"]

WAIT_MAX_INTERVAL_S = 1.0
"""The longest pause between two polls of a run record while waiting for it."""


class RunTimeoutError(TimeoutError):
    """A run did not reach the awaited state in time; carries the last record seen."""

    def __init__(self, message: str, last: RunRecord | None) -> None:
        super().__init__(message)
        self.last = last


class LocalCloudClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage_client: storage.Client = make_storage_client(settings)
        self.artifacts = ArtifactStore(self.storage_client, settings.artifacts_bucket)
        self.landing = ArtifactStore(self.storage_client, settings.landing_bucket)
        self.ledger = RunLedger(self.artifacts)
        self._bus: MessageBus | None = None

    @property
    def bus(self) -> MessageBus:
        if self._bus is None:
            self._bus = MessageBus(make_publisher(self.settings), self.settings)
        return self._bus

    def upload(self, name: str, data: bytes, content_type: str = "text/csv") -> int:
        """Upload to the landing bucket; returns the object's generation."""
        blob = self.storage_client.bucket(self.settings.landing_bucket).blob(name)
        blob.upload_from_string(data, content_type=content_type)
        return int(blob.generation or 0)

    def run_id_for(self, name: str, generation: int) -> str:
        return run_id_for_object(
            dataset_of_object(name), self.settings.landing_bucket, name, generation
        )

    def publish(self, message: StepMessage) -> str:
        return self.bus.publish(message)

    def wait_for_run(
        self,
        run_id: str,
        until: Callable[[RunRecord], bool] = lambda run: run.state != "running",
        timeout: float = 60,
        interval: float = 0.1,
        max_interval: float = WAIT_MAX_INTERVAL_S,
    ) -> RunRecord:
        """Poll the run record until ``until(record)`` holds: after ``interval`` at first,
        then half as long again after each poll, up to ``max_interval``.

        A poll is not free: it reads run.json, lists the run's claims and results and
        reads each (``RunLedger.get``), and a listing on the local storage emulator walks
        the whole bucket. Polled every 0.1 s through a minute-long wait, the waits of the
        test suites kept the storage emulator and its front busy on a full core of the
        machine, slowing the very steps they waited for."""
        deadline = time.monotonic() + timeout
        pause = interval
        while True:
            record = self.ledger.get(run_id)
            if record is not None and until(record):
                return record
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunTimeoutError(f"run {run_id} not done after {timeout}s: {record}", record)
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, max(interval, max_interval))
