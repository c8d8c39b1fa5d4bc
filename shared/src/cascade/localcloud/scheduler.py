"""The local cloud's Cloud Scheduler: the topology's ``schedules``, each on its cron.

In the cloud each schedule is a Cloud Scheduler job (``infra/scheduler.tf``) that
publishes the schedule's ``data`` as the JSON body of one Pub/Sub message to its topic at
every tick of its unix-cron ``schedule`` in its ``time_zone``, with the attributes
``origin=cloud-scheduler`` and ``schedule=<name>``. This process does the same against
the Pub/Sub emulator, with the same body and attributes, so the function behind the
topic cannot tell the two apart.

Like Cloud Scheduler it keeps no backlog: a tick missed while this process (or the
emulator) was down is not published late; the next tick is. A publish that fails is
retried with a short backoff until the next tick is due, as Cloud Scheduler retries a
failed job attempt.

``scheduler_period_s`` (a local-cloud setting, tests and demos only) replaces every cron
by a fixed period, so a test need not wait ten minutes for a sweep. The times of the last
and next ticks are written to ``<state>/scheduler.json`` (``cascade status`` and the
tests read it).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from cronsim import CronSim

from cascade.core.clients import make_publisher
from cascade.core.settings import Settings
from cascade.core.topology import ScheduleSpec, load_topology
from cascade.localcloud.local_settings import LocalCloudSettings

__all__ = ["SCHEDULER_STATE", "LocalScheduler", "main", "next_tick", "schedule_message"]

_log = logging.getLogger("cascade.localcloud.scheduler")
SCHEDULER_STATE = "scheduler.json"
_RETRY_S = 1.0


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, **attributes: str) -> Any: ...


def next_tick(schedule: ScheduleSpec, after: datetime) -> datetime:
    """The first tick of ``schedule`` strictly after ``after`` (aware), in UTC."""
    local = after.astimezone(ZoneInfo(schedule.time_zone))
    tick: datetime = next(CronSim(schedule.schedule, local))
    return tick.astimezone(UTC)


def schedule_message(name: str, schedule: ScheduleSpec) -> tuple[bytes, dict[str, str]]:
    """The body and attributes Cloud Scheduler publishes for ``schedule``
    (``pubsub_target`` of ``google_cloud_scheduler_job.topology``)."""
    data = json.dumps(schedule.data, separators=(",", ":")).encode()
    return data, {"origin": "cloud-scheduler", "schedule": name}


@dataclass
class _Job:
    name: str
    spec: ScheduleSpec
    due: datetime
    last_published: datetime | None = None
    last_message_id: str | None = None
    last_error: str | None = None


class LocalScheduler:
    def __init__(
        self,
        schedules: dict[str, ScheduleSpec],
        settings: Settings,
        publisher: Publisher,
        *,
        period_s: float = 0.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        state_file: Path | None = None,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._period = timedelta(seconds=period_s) if period_s > 0 else None
        self._clock = clock
        self._state_file = state_file
        now = clock()
        self.jobs = [_Job(name, spec, self._next(spec, now)) for name, spec in schedules.items()]
        self._save()

    def _next(self, spec: ScheduleSpec, after: datetime) -> datetime:
        return after + self._period if self._period is not None else next_tick(spec, after)

    def run_due(self) -> datetime | None:
        """Publish every job that is due; the time the next one is due (None: no jobs)."""
        now = self._clock()
        for job in self.jobs:
            if job.due <= now:
                self._publish(job, now)
        self._save()
        return min((job.due for job in self.jobs), default=None)

    def _publish(self, job: _Job, now: datetime) -> None:
        data, attributes = schedule_message(job.name, job.spec)
        topic = self._settings.topic_path(job.spec.topic)
        try:
            future = self._publisher.publish(topic, data, **attributes)
            job.last_message_id = str(future.result(timeout=self._settings.publish_timeout_s))
        except Exception as error:  # noqa: BLE001 - the emulator may be restarting
            job.last_error = f"{type(error).__name__}: {error}"
            _log.warning("schedule %s: publishing to %s failed: %s", job.name, topic, error)
            following = self._next(job.spec, job.due)
            # Retried until the following tick is due, then that tick replaces it.
            job.due = min(now + timedelta(seconds=_RETRY_S), following)
            return
        job.last_published, job.last_error = now, None
        job.due = self._next(job.spec, now)
        _log.info("schedule %s: published message %s", job.name, job.last_message_id)

    def _save(self) -> None:
        if self._state_file is None:
            return
        state = {
            job.name: {
                "topic": job.spec.topic,
                "next_at": job.due.isoformat(),
                "last_published_at": job.last_published and job.last_published.isoformat(),
                "last_message_id": job.last_message_id,
                "last_error": job.last_error,
            }
            for job in self.jobs
        }
        temporary = self._state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(self._state_file)

    def serve(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            due = self.run_due()
            wait = 60.0 if due is None else (due - self._clock()).total_seconds()
            stopping.wait(min(max(wait, 0.05), 60.0))


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    local = LocalCloudSettings().absolute()
    settings = local.runtime_settings()
    scheduler = LocalScheduler(
        load_topology(local.topology_file).schedules,
        settings,
        make_publisher(settings),
        period_s=local.scheduler_period_s,
        state_file=local.state_dir / SCHEDULER_STATE,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    _log.info("scheduling %s", ", ".join(job.name for job in scheduler.jobs) or "nothing")
    scheduler.serve(stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
