"""LocalJobRunner against the job service's HTTP server, and what the service announces."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cascade.core.errors import InvalidConfigError, UnknownJobError
from cascade.core.job_spec import TrainingJobSpec
from cascade.core.settings import Settings
from cascade.jobs.job_events import JobLogEntry, parse_job_event
from cascade.jobs.local_runner import LocalJob, LocalJobRunner
from cascade.localcloud.job_executor import LocalJobExecutor, LocalJobStore
from cascade.localcloud.job_service import PubSubJobNotifier, serve
from tests.unit.jobs.test_local_jobs import REPO_ROOT, RecordingNotifier, _environment, _spec


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[LocalJobRunner, LocalJobExecutor]]:
    executor = LocalJobExecutor(
        LocalJobStore(tmp_path / "jobs"),
        RecordingNotifier(),
        project="p",
        trainer_module="tests.unit.jobs.fake_trainer",
        python=sys.executable,
        base_environment=_environment(),
        cwd=REPO_ROOT,
    )
    server = serve(executor, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalJobRunner(f"http://127.0.0.1:{server.server_address[1]}"), executor
    finally:
        server.shutdown()
        server.server_close()


def test_submit_get_and_list_over_http(
    service: tuple[LocalJobRunner, LocalJobExecutor], tmp_path: Path
) -> None:
    runner, executor = service
    spec = _spec(tmp_path)

    name = runner.submit(spec, request_id="credit-r1")
    again = runner.submit(spec, request_id="credit-r1")
    executor.wait(name.rsplit("/", 1)[-1], 120)

    assert name == again
    assert name.startswith("projects/p/locations/local/customJobs/")
    status = runner.get(name)
    assert status.state == "succeeded"
    assert status.model_dir == spec.model_dir
    assert [job.name for job in runner.list_jobs()] == [name]
    assert runner.publishes_tuning_result is False


def test_unknown_jobs_and_bad_submissions(service: tuple[LocalJobRunner, LocalJobExecutor]) -> None:
    runner, _ = service

    with pytest.raises(UnknownJobError):
        runner.get("projects/p/locations/local/customJobs/0123456789abcdef")
    with pytest.raises(InvalidConfigError):
        runner._call("POST", "/v1/jobs", json={"spec": {}, "request_id": "x"})


def test_cancel_stops_a_running_job(
    service: tuple[LocalJobRunner, LocalJobExecutor], tmp_path: Path
) -> None:
    runner, executor = service
    name = runner.submit(_spec(tmp_path, hyperparameters={"sleep_s": 60}), request_id="slow")

    runner.cancel(name)
    job = executor.wait(name.rsplit("/", 1)[-1], 60)

    assert job is not None
    assert job.state == "cancelled"


class _Publisher:
    """Records raw publishes, as the Pub/Sub client's ``publish`` returns futures."""

    def __init__(self) -> None:
        self.raw: list[tuple[str, bytes]] = []

    def publish(self, topic: str, data: bytes, **attributes: str) -> Any:
        self.raw.append((topic, data))
        done: Future[str] = Future()
        done.set_result("1")
        return done


def _job(spec: TrainingJobSpec, **fields: Any) -> LocalJob:
    return LocalJob.model_validate(
        {
            "job_id": "0123456789abcdef",
            "name": "projects/p/locations/local/customJobs/0123456789abcdef",
            "request_id": spec.run_id,
            "spec": spec,
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
            **fields,
        }
    )


def test_the_notifier_announces_failure_as_the_sinks_log_entry(tmp_path: Path) -> None:
    publisher = _Publisher()
    notifier = PubSubJobNotifier(Settings(project="p"), publisher)

    notifier.job_ended(_job(_spec(tmp_path), kind="custom", state="failed", error="boom"))

    ((topic, data),) = publisher.raw
    assert topic == "projects/p/topics/cascade-job-events"
    entry = parse_job_event(data)
    assert isinstance(entry, JobLogEntry)
    assert entry.job_id == "0123456789abcdef"
    assert entry.severity == "ERROR"
    assert entry.announces_end
    assert "boom" in entry.text


def test_a_tuning_job_is_announced_by_its_log_entry_only(tmp_path: Path) -> None:
    """Vertex AI publishes no model-trained for a tuning job: the training_job step does."""
    publisher = _Publisher()
    notifier = PubSubJobNotifier(Settings(project="p"), publisher)
    spec = _spec(tmp_path)
    model_dir = f"{spec.output_dir}/4/model"

    notifier.job_ended(_job(spec, kind="tuning", state="succeeded", model_dir=model_dir))

    ((topic, data),) = publisher.raw
    assert topic == "projects/p/topics/cascade-job-events"
    entry = parse_job_event(data)
    assert isinstance(entry, JobLogEntry)
    assert entry.job_id == "0123456789abcdef"
    assert entry.severity == "INFO"
    assert entry.announces_end
    assert json.loads(data)["resource"]["type"] == "ml_job"
