"""The local job service: Vertex AI's stand-in, HTTP on loopback (``LocalJobRunner``'s server).

``python -m cascade.localcloud.job_service`` serves ``/v1/jobs`` on
``127.0.0.1:<CASCADE_LOCAL_JOB_SERVICE_PORT>`` and runs each job's trainer processes
(``cascade.localcloud.job_executor``) with the entry point and environment Vertex AI uses.
Jobs persist under ``<state_dir>/jobs/``: a restarted service resumes the jobs it had
not finished and announces those whose end it had not announced.

A job's end is announced on ``job-events`` as Vertex AI's log sink announces it: one
LogEntry naming the job (``cascade.jobs.job_events.job_end_log_entry``), whatever the
end. The training_job step asks the job runner for the state, error and best trial; for
a tuning job it publishes the best trial's ``model-trained`` (as on Google Cloud, where
Vertex publishes nothing); a training job's trainer published ``model-trained`` itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
from pydantic import ValidationError

from cascade.batch.jobs import SubmitBatchJobRequest
from cascade.core.clients import make_publisher
from cascade.core.grants import IDENTITY_ENV, JOBS_IDENTITY_ENV
from cascade.core.settings import Settings, load_settings
from cascade.jobs.beam_jobs import LaunchDataflowJobRequest
from cascade.jobs.job_events import job_end_log_entry
from cascade.jobs.local_runner import LocalJob, SubmitJobRequest
from cascade.localcloud.batch_executor import LocalBatchExecutor
from cascade.localcloud.beam_executor import DataflowLaunchRefused, LocalBeamExecutor
from cascade.localcloud.job_executor import LocalJobExecutor, LocalJobStore
from cascade.localcloud.local_settings import LOOPBACK, LocalCloudSettings

__all__ = [
    "JobServiceHandler",
    "PubSubJobNotifier",
    "beam_environment",
    "main",
    "serve",
    "trainer_environment",
]

_log = logging.getLogger("cascade.localcloud.job_service")
_JOB_PATH = re.compile(r"^/v1/jobs/([0-9a-f]{16})(:cancel)?$")
_BATCH_PATH = re.compile(r"^/v1/batchPredictionJobs/([0-9a-f]{16})$")
_DATAFLOW_PATH = re.compile(r"^/v1/dataflowJobs/([0-9a-f]{16})$")
_ERROR_CHARS = 4000
_ANNOUNCE_RETRY_S = 2.0


class PubSubJobNotifier:
    """Announces job ends on the emulator's topics, as Vertex AI plus a log sink would."""

    def __init__(self, settings: Settings, publisher: pubsub_v1.PublisherClient) -> None:
        self._settings = settings
        self._publisher = publisher

    def job_ended(self, job: LocalJob) -> None:
        """What Vertex AI's log sink forwards when a job ends: one log entry naming it.

        No state, no error, no best trial travel in the message (Vertex sends none): the
        training_job step reads them from the job runner, and for a tuning job it
        publishes the best trial's ``model-trained`` itself, as on Google Cloud.
        """
        finished = job.finished_at or datetime.now(UTC)
        entry = job_end_log_entry(
            project=self._settings.project,
            job_id=job.job_id,
            job_name=job.name,
            state=job.state,
            error=job.error[-_ERROR_CHARS:],
            timestamp=finished.isoformat().replace("+00:00", "Z"),
            insert_id=uuid.uuid4().hex,
        )
        self.publish_log_entry(entry)

    def publish_log_entry(self, entry: dict[str, Any]) -> None:
        """One job log entry on ``job-events``, as a log sink forwards it."""
        topic = self._settings.topic_path("job-events")
        future = self._publisher.publish(topic, json.dumps(entry).encode())
        future.result(timeout=self._settings.publish_timeout_s)


class JobServiceHandler(BaseHTTPRequestHandler):
    executor: LocalJobExecutor  # set on the subclass ``serve`` builds
    batches: LocalBatchExecutor | None = None  # batch prediction jobs, where served
    dataflow: LocalBeamExecutor | None = None  # Beam jobs (Dataflow's stand-in), where served

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        _log.debug(format, *args)

    def _reply(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _job_reply(self, job: LocalJob | None) -> None:
        if job is None:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "no such job"})
        else:
            self._reply(HTTPStatus.OK, job.model_dump(mode="json"))

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(HTTPStatus.OK, {"status": "ok"})
        elif self.path == "/v1/jobs":
            jobs = [job.model_dump(mode="json") for job in self.executor.store.all()]
            self._reply(HTTPStatus.OK, {"jobs": jobs})
        elif (match := _JOB_PATH.fullmatch(self.path)) and not match.group(2):
            self._job_reply(self.executor.store.load(match.group(1)))
        elif self.batches is not None and self.path == "/v1/batchPredictionJobs":
            batches = [job.model_dump(mode="json") for job in self.batches.all()]
            self._reply(HTTPStatus.OK, {"jobs": batches})
        elif self.dataflow is not None and self.path == "/v1/dataflowJobs":
            beam_jobs = [job.model_dump(mode="json") for job in self.dataflow.all()]
            self._reply(HTTPStatus.OK, {"jobs": beam_jobs})
        elif self.dataflow is not None and (match := _DATAFLOW_PATH.fullmatch(self.path)):
            beam_job = self.dataflow.load(match.group(1))
            if beam_job is None:
                self._reply(HTTPStatus.NOT_FOUND, {"error": "no such Dataflow job"})
            else:
                self._reply(HTTPStatus.OK, beam_job.model_dump(mode="json"))
        elif self.batches is not None and (match := _BATCH_PATH.fullmatch(self.path)):
            found = self.batches.load(match.group(1))
            if found is None:
                self._reply(HTTPStatus.NOT_FOUND, {"error": "no such batch prediction job"})
            else:
                self._reply(HTTPStatus.OK, found.model_dump(mode="json"))
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path == "/v1/jobs":
            self._submit()
        elif self.batches is not None and self.path == "/v1/batchPredictionJobs":
            self._submit_batch(self.batches)
        elif self.dataflow is not None and self.path == "/v1/dataflowJobs":
            self._launch_dataflow(self.dataflow)
        elif (match := _JOB_PATH.fullmatch(self.path)) and match.group(2):
            job_id = match.group(1)
            found = self.executor.store.load(job_id)
            self._job_reply(None if found is None else self.executor.cancel(job_id))
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

    def _submit(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = SubmitJobRequest.model_validate_json(self.rfile.read(length))
        except ValidationError as error:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self._job_reply(self.executor.submit(request.spec, request.request_id))

    def _submit_batch(self, batches: LocalBatchExecutor) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = SubmitBatchJobRequest.model_validate_json(self.rfile.read(length))
        except ValidationError as error:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        job = batches.submit(request.spec, request.request_id)
        self._reply(HTTPStatus.OK, job.model_dump(mode="json"))

    def _launch_dataflow(self, dataflow: LocalBeamExecutor) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = LaunchDataflowJobRequest.model_validate_json(self.rfile.read(length))
            job = dataflow.launch(request.job_name, request.parameters)
        except ValidationError as error:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        except DataflowLaunchRefused as refused:
            self._reply(HTTPStatus(refused.status), {"error": str(refused)})
            return
        self._reply(HTTPStatus.OK, job.model_dump(mode="json"))


def serve(
    executor: LocalJobExecutor,
    port: int,
    batches: LocalBatchExecutor | None = None,
    dataflow: LocalBeamExecutor | None = None,
) -> ThreadingHTTPServer:
    handler = type(
        "BoundJobServiceHandler",
        (JobServiceHandler,),
        {"executor": executor, "batches": batches, "dataflow": dataflow},
    )
    return ThreadingHTTPServer((LOOPBACK, port), handler)


def _announce_loop(
    executor: LocalJobExecutor, dataflow: LocalBeamExecutor, stop: threading.Event
) -> None:
    while not stop.wait(_ANNOUNCE_RETRY_S):
        executor.announce_pending()
        dataflow.announce_pending()


def beam_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The Beam jobs' environment: ours (the emulators' hosts), without a local identity:
    the pipeline reads and writes through Beam's GCS filesystem and the storage client,
    not through the clients that enforce one (docs/fidelity.md)."""
    return {k: v for k, v in environ.items() if k not in (IDENTITY_ENV, JOBS_IDENTITY_ENV)}


def trainer_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The trainers' environment: ours, running as the Vertex AI jobs' account."""
    environment = {k: v for k, v in environ.items() if k not in (IDENTITY_ENV, JOBS_IDENTITY_ENV)}
    if environ.get(JOBS_IDENTITY_ENV):
        environment[IDENTITY_ENV] = environ[JOBS_IDENTITY_ENV]
    return environment


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("optuna").setLevel(logging.WARNING)
    local = LocalCloudSettings().absolute()
    settings = load_settings()
    notifier = PubSubJobNotifier(settings, make_publisher(settings))
    executor = LocalJobExecutor(
        LocalJobStore(local.state_dir / "jobs"),
        notifier,
        project=settings.project,
        trainer_module=local.trainer_module,
        python=sys.executable,
        base_environment=trainer_environment(os.environ),
        cwd=local.repo_root,
    )
    batches = LocalBatchExecutor(
        local.state_dir / "batch-jobs",
        project=settings.project,
        python=sys.executable,
        base_environment=trainer_environment(os.environ),
        cwd=local.repo_root,
    )
    dataflow = LocalBeamExecutor(
        local.state_dir / "dataflow-jobs",
        project=settings.project,
        region=settings.region,
        python=str(local.repo_root / ".venv-beam" / "bin" / "python"),
        base_environment=beam_environment(os.environ),
        announce=notifier.publish_log_entry,
        cwd=local.repo_root,
    )
    server = serve(executor, local.job_service_port, batches, dataflow)
    stop = threading.Event()
    threading.Thread(target=_announce_loop, args=(executor, dataflow, stop), daemon=True).start()
    executor.resume()
    batches.resume()
    dataflow.resume()
    _log.info("job service on %s:%d", LOOPBACK, local.job_service_port)
    try:
        server.serve_forever()
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
