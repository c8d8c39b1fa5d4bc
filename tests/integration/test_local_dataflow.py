"""The local job service's Beam jobs: Dataflow's stand-in, over its HTTP API.

The job service's handler serves a ``LocalBeamExecutor`` on loopback; ``LocalBeamRunner``
(``DataflowBeamRunner``'s twin) launches the statistics pipeline of a landed object in
fake-gcs-server with the parameters a Flex Template launch carries; the job runs in
.venv-beam, its outputs land in the bucket, and its end is announced once as the log
entry Dataflow's job messages reach job-events as, which ``parse_job_event`` reads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage

from cascade.core.errors import InvalidConfigError
from cascade.jobs.beam_jobs import LocalBeamRunner, launch_refusal
from cascade.jobs.dataflow_runner import BeamStatisticsSpec, dataflow_job_name, pipeline_parameters
from cascade.jobs.job_events import JobLogEntry, parse_job_event
from cascade.localcloud.beam_executor import LocalBeamExecutor
from cascade.localcloud.job_executor import LocalJobExecutor, LocalJobStore
from cascade.localcloud.job_service import beam_environment, serve
from cascade.localcloud.processes import free_loopback_port
from tests.integration.fake_gcs import gcs_fixture  # noqa: F401 - the `gcs` fixture
from tests.unit.beam.beam_venv import PIPELINE_TIMEOUT_S, beam_python

pytestmark = pytest.mark.integration


class Announcements:
    def __init__(self, failures: int = 0) -> None:
        self.entries: list[dict[str, Any]] = []
        self._failures = failures

    def __call__(self, entry: dict[str, Any]) -> None:
        if self._failures:
            self._failures -= 1
            raise ConnectionError("Pub/Sub emulator unavailable")
        self.entries.append(entry)


class _NoNotifier:
    def job_ended(self, job: object) -> None:
        raise AssertionError("no training job runs here")


@pytest.fixture
def service(
    gcs: tuple[str, storage.Client], tmp_path: Path
) -> Iterator[tuple[LocalBeamRunner, LocalBeamExecutor, Announcements, storage.Client]]:
    endpoint, client = gcs
    announcements = Announcements(failures=1)
    environment = {**beam_environment(os.environ), "STORAGE_EMULATOR_HOST": endpoint}
    dataflow = LocalBeamExecutor(
        tmp_path / "dataflow-jobs",
        project="local-project",
        region="us-central1",
        python=str(beam_python()),
        base_environment=environment,
        announce=announcements,
    )
    executor = LocalJobExecutor(
        LocalJobStore(tmp_path / "jobs"),
        _NoNotifier(),
        project="local-project",
        trainer_module="cascade.trainer.task",
        python="python",
        base_environment={},
    )
    port = free_loopback_port()
    server = serve(executor, port, None, dataflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    runner = LocalBeamRunner(f"http://127.0.0.1:{port}")
    try:
        yield runner, dataflow, announcements, client
    finally:
        runner.close()
        server.shutdown()
        server.server_close()


def _spec(
    run_id: str, generation: int, *, output_prefix: str = "dataflow/outputs"
) -> BeamStatisticsSpec:
    return BeamStatisticsSpec(
        run_id=run_id,
        dataset="shop",
        input_uri="gs://landing/shop/orders.csv",
        generation=generation,
        uri=f"gs://landing/shop/orders.csv#{generation}",
        file_format="csv",
        validation_config="{}",
        output_uri=f"gs://artifacts/{output_prefix}/{run_id}/validate",
        block_bytes=2048,
    )


def _until_finished(runner: LocalBeamRunner, job_id: str) -> str:
    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = runner.get(job_id)
        if status.finished:
            return status.state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {PIPELINE_TIMEOUT_S} s")


def test_a_launched_job_runs_the_pipeline_and_announces_its_end_once(
    service: tuple[LocalBeamRunner, LocalBeamExecutor, Announcements, storage.Client],
) -> None:
    runner, dataflow, announcements, client = service
    blob = client.bucket("landing").blob("shop/orders.csv")
    blob.upload_from_string(
        b"id,kind\n" + b"".join(f"{i},{'ab'[i % 2]}\n".encode() for i in range(900))
    )

    job_id = runner.submit(_spec("run-1", blob.generation))

    assert _until_finished(runner, job_id) == "succeeded"
    result = client.bucket("artifacts").blob("dataflow/outputs/run-1/validate/result.json")
    assert json.loads(result.download_as_bytes())["num_examples"] == 900
    dataflow.announce_pending()  # the first announcement failed: retried, then never again
    dataflow.announce_pending()
    assert len(announcements.entries) == 1
    entry = announcements.entries[0]
    assert entry["resource"]["type"] == "dataflow_step"
    assert entry["logName"] == "projects/local-project/logs/dataflow.googleapis.com%2Fjob-message"
    assert entry["resource"]["labels"]["job_name"] == dataflow_job_name("run-1")
    parsed = parse_job_event(json.dumps(entry).encode())
    assert isinstance(parsed, JobLogEntry)
    assert parsed.job_id == job_id


def test_a_second_launch_of_an_active_job_finds_it_and_starts_nothing(
    service: tuple[LocalBeamRunner, LocalBeamExecutor, Announcements, storage.Client],
) -> None:
    runner, _, _, client = service
    blob = client.bucket("landing").blob("shop/orders.csv")
    blob.upload_from_string(b"id\n" + b"".join(f"{i}\n".encode() for i in range(50_000)))
    spec = _spec("run-2", blob.generation)

    first = runner.submit(spec)
    again = runner.submit(spec)

    assert again == first
    assert [job.job_id for job in runner.list_jobs()] == [first]
    assert _until_finished(runner, first) == "succeeded"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"output": "gs://artifacts/runs/r/validation"}, "does not match"),
        ({"input": "/etc/passwd"}, "does not match"),
        ({"setup_file": "/tmp/x.py"}, "declares no parameter 'setup_file'"),
        ({"file_format": "exe"}, "does not match"),
        ({"block_bytes": "0"}, "does not match"),
    ],
)
def test_launches_dataflow_would_refuse_are_refused(
    service: tuple[LocalBeamRunner, LocalBeamExecutor, Announcements, storage.Client],
    change: dict[str, str],
    reason: str,
) -> None:
    runner, dataflow, _, _ = service
    parameters = {**pipeline_parameters(_spec("run-3", 1)), **change}

    assert reason in launch_refusal(dataflow_job_name("run-3"), parameters)
    response = runner._session.post(  # the raw launch, as a client could send it
        f"{runner.base_url}/v1/dataflowJobs",
        json={"job_name": dataflow_job_name("run-3"), "parameters": parameters},
        timeout=10,
    )
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert dataflow.all() == []


def test_a_bad_job_name_is_refused_through_the_runner(
    service: tuple[LocalBeamRunner, LocalBeamExecutor, Announcements, storage.Client],
) -> None:
    runner, _, _, _ = service
    response = runner._session.post(
        f"{runner.base_url}/v1/dataflowJobs",
        json={"job_name": "Bad_Name", "parameters": pipeline_parameters(_spec("r", 1))},
        timeout=10,
    )

    assert response.status_code == 400
    assert "does not match" in response.json()["error"]
    with pytest.raises(InvalidConfigError, match="refused the launch"):
        runner.submit(_spec("run-4", 1, output_prefix="not-dataflow"))
