"""The supervisor: starts the local cloud in order, keeps it running, stops it cleanly.

Order matters: the Pub/Sub emulator first; then every topic and subscription (so no
event is published into a topic nobody subscribes to); then the GCS emulator, whose
notifications need their topic; then the buckets, the functions and the router.
A child that dies is restarted (at most ``max_restarts`` a minute, then marked failed
instead of crash-looping); after a Pub/Sub emulator restart the topology is provisioned
again and the router reconnects. The scheduler (Cloud Scheduler's stand-in) starts last:
its first message finds every consumer up. SIGTERM stops every child by process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

from google.api_core import exceptions as gexc

from cascade.batch.reload import reload_precomputed
from cascade.core.clients import make_publisher, make_storage_client, make_subscriber
from cascade.core.grants import identity_for
from cascade.core.store import ArtifactStore
from cascade.core.topology import Topology, load_topology
from cascade.core.warehouse import make_bigquery_client
from cascade.localcloud.bigquery_emulator import bigquery_spec
from cascade.localcloud.bigtable_emulator import (
    BIGTABLE_EMULATOR_ENV,
    LOCAL_BIGTABLE_INSTANCE,
    LOCAL_BIGTABLE_TABLE,
    bigtable_host,
    bigtable_spec,
    provision_bigtable,
)
from cascade.localcloud.components import (
    check_prerequisites,
    console_spec,
    function_specs,
    gcs_front_spec,
    gcs_spec,
    gcs_subscriber_spec,
    job_service_spec,
    model_server_spec,
    pubsub_spec,
    router_spec,
    scheduler_spec,
    sweep_partial_objects,
    vertex_endpoint_spec,
)
from cascade.localcloud.fingerprint import code_fingerprint
from cascade.localcloud.function_host import terminated_for_memory
from cascade.localcloud.gcs_subscriber import GCS_SUBSCRIBER_STATE, publish_stream_schemas
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.message_ids import advance_past, recorded_floor
from cascade.localcloud.processes import ManagedProcess, free_loopback_port, stop_process_groups
from cascade.localcloud.pubsub_admin import provision_pubsub
from cascade.localcloud.scheduler import SCHEDULER_STATE
from cascade.localcloud.state_file import CloudState, ComponentState, read_state, write_state
from cascade.serving.precomputed import BigtableStore

__all__ = ["Supervisor", "main"]

_log = logging.getLogger("cascade.localcloud.supervisor")
RESTART_WINDOW_S = 60.0
VERTEX_JOBS_ACCOUNT = "vertex-jobs"  # the topology's account of Vertex AI jobs (trainers)


class Supervisor:
    def __init__(self, local: LocalCloudSettings, topology: Topology) -> None:
        if not local.job_service_port:
            local = local.model_copy(update={"job_service_port": free_loopback_port()})
        if not local.model_server_port:
            local = local.model_copy(update={"model_server_port": free_loopback_port()})
        if not local.vertex_endpoint_port:
            local = local.model_copy(update={"vertex_endpoint_port": free_loopback_port()})
        if not local.bigquery_port:
            local = local.model_copy(update={"bigquery_port": free_loopback_port()})
        if not local.bigquery_grpc_port:
            local = local.model_copy(update={"bigquery_grpc_port": free_loopback_port()})
        if not local.bigtable_port:
            local = local.model_copy(update={"bigtable_port": free_loopback_port()})
        if not local.gcs_backend_port:
            local = local.model_copy(update={"gcs_backend_port": free_loopback_port()})
        self.local = local
        self.topology = topology
        env = local.child_environment()
        self.pubsub = ManagedProcess(pubsub_spec(local, env))
        self.gcs = ManagedProcess(gcs_spec(local, env))
        self.gcs_front = ManagedProcess(gcs_front_spec(local, env))
        self.bigquery = ManagedProcess(bigquery_spec(local, env))
        self.bigtable = ManagedProcess(bigtable_spec(local, env))
        self.functions = [ManagedProcess(spec) for spec in function_specs(local, topology, env)]
        self.router = ManagedProcess(router_spec(local, env))
        self.scheduler = ManagedProcess(scheduler_spec(local, env))
        self.gcs_subscriber = ManagedProcess(gcs_subscriber_spec(local, env))
        jobs_identity = (
            identity_for(topology, VERTEX_JOBS_ACCOUNT, local.runtime_settings())
            if VERTEX_JOBS_ACCOUNT in topology.service_accounts
            else None
        )
        self.job_service = ManagedProcess(job_service_spec(local, env, jobs_identity))
        self.model_server = ManagedProcess(model_server_spec(local, env))
        self.vertex_endpoint = ManagedProcess(vertex_endpoint_spec(local, env))
        self.console = (
            ManagedProcess(console_spec(local, topology, env)) if local.console_port else None
        )
        self.state = CloudState(
            supervisor_pid=os.getpid(),
            environment=local.runtime_environment(),
            code_fingerprint=code_fingerprint(local),
        )
        self.stopping = threading.Event()
        self.failed: set[str] = set()

    @property
    def processes(self) -> list[ManagedProcess]:
        return [
            self.pubsub,
            self.gcs,
            self.gcs_front,
            self.bigquery,
            self.bigtable,
            self.job_service,
            self.model_server,
            self.vertex_endpoint,
            *self.functions,
            self.router,
            self.gcs_subscriber,
            self.scheduler,
            *([self.console] if self.console is not None else []),
        ]

    def start(self) -> None:
        self._start(self.pubsub)
        self.advance_message_ids()
        self.provision_pubsub()
        sweep_partial_objects(self.local.state_dir / "gcs")
        self._start(self.gcs)
        self._start(self.gcs_front)
        self.provision_buckets()
        self._start(self.bigquery)
        self.provision_warehouse()
        self._start(self.bigtable)
        provision_bigtable(self.local)
        # Bigtable's data client finds an emulator only in the environment: this process
        # (the local cloud's own edge) sets it once, for its reloads.
        os.environ[BIGTABLE_EMULATOR_ENV] = bigtable_host(self.local)
        self.reload_precomputed()
        self._start(self.job_service)
        self._start(self.model_server)
        self._start(self.vertex_endpoint)
        for function in self.functions:
            function.start()
        for function in self.functions:
            function.wait_ready(self.local.ready_timeout_s)
            self._record(function, "running")
        self._start(self.router)
        # The streams' files (Pub/Sub Cloud Storage subscriptions) land once the router
        # delivers their finalize notifications.
        (self.local.state_dir / GCS_SUBSCRIBER_STATE).unlink(missing_ok=True)  # a previous run's
        self._start(self.gcs_subscriber)
        (self.local.state_dir / SCHEDULER_STATE).unlink(missing_ok=True)  # a previous run's
        self._start(self.scheduler)
        if self.console is not None:
            self._start(self.console)
        self.state.status = "ready"
        self.save()

    def _start(self, process: ManagedProcess) -> None:
        self._record(process, "starting")
        process.start()
        process.wait_ready(self.local.ready_timeout_s)
        self._record(process, "running")

    def advance_message_ids(self) -> None:
        """Past every id the router and the streams' writer acted on, before any topic
        of the topology exists to publish to (``cascade.localcloud.message_ids``)."""
        floor = recorded_floor(self.local.state_dir)
        try:
            advance_past(self.local.pubsub_host, self.local.project, floor)
        except Exception:  # noqa: BLE001 - a cloud whose ids may repeat beats one with no topics
            _log.exception("could not move the emulator's message ids past %d", floor)

    def provision_pubsub(self) -> None:
        provision_pubsub(
            self.topology,
            self.local.runtime_settings(),
            self.local.notifications_topic,
            make_publisher(self.local.runtime_settings()),
            make_subscriber(self.local.runtime_settings()),
        )

    def provision_buckets(self) -> None:
        settings = self.local.runtime_settings()
        client = make_storage_client(settings)
        for name in (settings.landing_bucket, settings.artifacts_bucket):
            with contextlib.suppress(gexc.Conflict):
                client.create_bucket(name)
        publish_stream_schemas(  # as Terraform's stream_schema objects
            self.topology,
            self.local.repo_root / "infra",
            ArtifactStore(client, settings.artifacts_bucket),
        )

    def provision_warehouse(self) -> None:
        """The topology's warehouse datasets, as Terraform creates them in the cloud."""
        settings = self.local.runtime_settings()
        with contextlib.closing(make_bigquery_client(settings)) as client:
            for name in self.topology.warehouse:
                client.create_dataset(settings.warehouse_dataset(name), exists_ok=True)

    def reload_precomputed(self) -> None:
        """Load the static and hybrid datasets' answers into the Bigtable emulator again
        from their batch predictions in the local BigQuery (``cascade.batch.reload``).
        A failure is logged, never raised: the local cloud runs on without them."""
        settings = self.local.runtime_settings()
        try:
            store = BigtableStore(self.local.project, LOCAL_BIGTABLE_INSTANCE, LOCAL_BIGTABLE_TABLE)
            try:
                with contextlib.closing(make_bigquery_client(settings)) as client:
                    artifacts = ArtifactStore(
                        make_storage_client(settings), settings.artifacts_bucket
                    )
                    loaded = reload_precomputed(settings, store, artifacts, client)
            finally:
                store.close()
        except Exception:  # noqa: BLE001 - keep supervising; static datasets answer 404
            _log.exception("reloading precomputed answers failed")
            return
        _log.info("reloaded precomputed answers: %s", loaded or "none to reload")

    def monitor(self) -> None:
        while not self.stopping.wait(0.25):
            for process in self.processes:
                if process.exited() and process.spec.name not in self.failed:
                    self.restart(process)

    def restart(self, process: ManagedProcess) -> None:
        now = time.monotonic()
        process.restarts = [t for t in process.restarts if now - t < RESTART_WINDOW_S]
        name = process.spec.name
        code = None if process.process is None else process.process.returncode
        if name.startswith("function:") and terminated_for_memory(code, process.spec.log_path):
            # Cloud Run starts a new instance after every memory kill: the events that
            # caused it are retried and dead-lettered by their own policy, never by a
            # restart budget that would take the function down for every other event.
            _log.warning("%s was terminated for its memory limit; starting it again", name)
        elif len(process.restarts) >= self.local.max_restarts:
            _log.error("%s keeps exiting; not restarting it again", name)
            self.failed.add(name)
            self._record(process, "failed")
            return
        else:
            _log.warning("%s exited with %s; restarting", name, code)
            process.restarts.append(now)
        self._record(process, "restarting")
        try:
            if process is self.gcs:
                for path in sweep_partial_objects(self.local.state_dir / "gcs"):
                    _log.warning("removed %s, a write the GCS emulator died in", path)
            process.start()
            process.wait_ready(self.local.ready_timeout_s)
            if process is self.pubsub:
                self.advance_message_ids()
                self.provision_pubsub()
                self.router.stop()  # its streams died with the emulator; it reconnects
                # The streams' topics and subscriptions died with it: the gcs-subscriber
                # provisions them again when it restarts.
                self.gcs_subscriber.stop()
            if process is self.bigtable:  # its answers died with it (memory only)
                provision_bigtable(self.local)
                self.reload_precomputed()
        except Exception as error:  # noqa: BLE001 - keep supervising the others
            _log.error("restarting %s failed: %s", name, error)
            return
        self._record(process, "running")

    def stop(self) -> None:
        """Stop every child at once (SIGTERM to each process group, then SIGKILL to what
        is left after 10 s): what was in flight is redelivered after the next start."""
        self.state.status = "stopping"
        self.save()
        stop_process_groups(
            [process.process.pid for process in self.processes if process.process is not None]
        )
        for process in reversed(self.processes):
            process.reap()
            self._record(process, "stopped")

    def _record(self, process: ManagedProcess, status: str) -> None:
        component = self.state.components.setdefault(process.spec.name, ComponentState())
        component.pid = process.pid
        component.log = str(process.spec.log_path)
        component.restarts = len(process.restarts)
        component.status = status  # type: ignore[assignment]
        self.save()

    def save(self) -> None:
        write_state(self.local.state_dir, self.state)


def detach() -> None:
    """Become a daemon: the launching process returns at once, we run on in a new session."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def main() -> int:
    if "--detach" in sys.argv[1:]:
        detach()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    local = LocalCloudSettings().absolute()
    local.state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(local.state_dir)
    if existing is not None and existing.supervisor_pid != os.getpid():
        with contextlib.suppress(ProcessLookupError):
            os.kill(existing.supervisor_pid, 0)
            _log.error(
                "another supervisor (pid %d) owns %s", existing.supervisor_pid, local.state_dir
            )
            return 2
    supervisor = Supervisor(local, load_topology(local.topology_file))
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stopping.set())
    try:
        check_prerequisites(local.repo_root)
        supervisor.start()
        _log.info("local cloud ready")
        supervisor.monitor()
    except Exception as error:  # noqa: BLE001 - reported through the state file
        _log.exception("local cloud failed")
        supervisor.state.status = "failed"
        supervisor.state.error = str(error)
        supervisor.save()
        supervisor.stop()
        supervisor.state.status = "failed"
        supervisor.save()
        return 1
    supervisor.stop()
    (local.state_dir / "state.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
