"""Settings of the local cloud: where its state lives, its ports, its speed-ups."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.core.settings import Settings

LOCAL_BIGTABLE_INSTANCE = "cascade-local"
"""The Bigtable instance the local cloud creates in the emulator."""

__all__ = ["LOCAL_BIGTABLE_INSTANCE", "LOOPBACK", "LocalCloudSettings"]

LOOPBACK = "127.0.0.1"


class LocalCloudSettings(BaseSettings):
    """Every field is also an environment variable ``CASCADE_LOCAL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CASCADE_LOCAL_", frozen=True, extra="ignore")

    state_dir: Path = Field(Path(".cascade"), description="Logs, pids, emulator data.")
    repo_root: Path = Field(Path("."), description="Where functions/ and infra/ are.")
    topology_file: Path = Field(Path("infra/topology.yaml"))
    project: str = "cascade-local"
    pubsub_port: int = Field(8085, gt=0, lt=65536)
    gcs_port: int = Field(9023, gt=0, lt=65536)
    gcs_backend_port: int = Field(
        0,
        ge=0,
        lt=65536,
        description="fake-gcs-server behind the same-object write limit (localcloud.gcs_front),"
        " which serves gcs_port; 0: a free port chosen at start (0 without the supervisor:"
        " fake-gcs-server serves gcs_port itself).",
    )
    gcs_object_writes_per_s: float = Field(
        1.0, gt=0, description="Mutations of one object name a second (Cloud Storage: 1)."
    )
    router_port: int = Field(8790, gt=0, lt=65536)
    functions_base_port: int = Field(8800, gt=0, lt=65000)
    backoff_scale: float = Field(
        0.05, gt=0, le=1, description="Multiplies the topology's retry backoff (10 s -> 0.5 s)."
    )
    ready_timeout_s: float = Field(60, gt=0)
    max_restarts: int = Field(5, ge=0, description="Restarts of one process within a minute.")
    job_service_port: int = Field(
        0, ge=0, lt=65536, description="The local job service; 0: a free port chosen at start."
    )
    trainer_module: str = Field(
        "cascade.trainer.task", description="What the local job service runs as the trainer."
    )
    model_server_port: int = Field(
        0, ge=0, lt=65536, description="The local model server; 0: a free port chosen at start."
    )
    vertex_endpoint_port: int = Field(
        0,
        ge=0,
        lt=65536,
        description="Vertex AI's endpoint twin (TLS; gRPC and REST); 0: a free port at start.",
    )
    bigquery_port: int = Field(
        0, ge=0, lt=65536, description="The local BigQuery's REST API; 0: a free port at start."
    )
    bigquery_grpc_port: int = Field(
        0, ge=0, lt=65536, description="Its gRPC (Storage Read/Write) API; 0: a free port."
    )
    bigtable_port: int = Field(
        0, ge=0, lt=65536, description="The Bigtable emulator; 0: a free port at start."
    )
    model_server_workers: int = Field(2, ge=1, le=16, description="Its gunicorn workers.")
    console_port: int = Field(
        8090,
        ge=0,
        lt=65536,
        description="The web console (`cascade console`, as the console's service account);"
        " 0: not started.",
    )
    claim_lease_s: int = Field(
        60, gt=0, description="CASCADE_CLAIM_LEASE_S of every process (crashed-step takeover)."
    )
    scheduler_period_s: float = Field(
        0,
        ge=0,
        description="Tests and demos: every topology schedule fires this often instead of "
        "on its cron; 0 follows the cron, as Cloud Scheduler does.",
    )
    train_http_invokers: str = Field(
        "user:operator@cascade.local",
        description="Comma-separated IAM members who may call train-http (the Terraform "
        "variable of the same name); `cascade id-token` speaks for operator@cascade.local.",
    )
    bless_http_invokers: str = Field(
        "user:operator@cascade.local", description="Who may call evaluate-http (force-bless)."
    )
    review_http_invokers: str = Field(
        "user:operator@cascade.local", description="Who may call review-http."
    )
    stream_duration_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Tests and demos: the gcs-subscriber times a stream's batch by "
        "max_duration times this (the subscription keeps its legal 60-600 s value); 1 "
        "times it as the service does.",
    )

    @property
    def _absolute_state_dir(self) -> Path:
        return (
            self.state_dir if self.state_dir.is_absolute() else Path.cwd() / self.state_dir
        ).resolve()

    @property
    def id_token_key_file(self) -> Path:
        """The local issuer's signing key (``cascade.localcloud.id_tokens``): one path
        for every process, whatever its working directory."""
        return self._absolute_state_dir / "id-token-key.pem"

    def invokers(self, group: str) -> tuple[str, ...]:
        """The IAM members of a topology invoker group (``retrain``, ``bless``,
        ``review``), as the Terraform variables list them."""
        listed = {
            "retrain": self.train_http_invokers,
            "bless": self.bless_http_invokers,
            "review": self.review_http_invokers,
        }[group]
        return tuple(member.strip() for member in listed.split(",") if member.strip())

    @property
    def gcs_url(self) -> str:
        return f"http://{LOOPBACK}:{self.gcs_port}"

    @property
    def gcs_backend_url(self) -> str:
        """fake-gcs-server itself: behind the front when there is one, else ``gcs_url``."""
        return f"http://{LOOPBACK}:{self.gcs_backend_port or self.gcs_port}"

    @property
    def pubsub_host(self) -> str:
        return f"{LOOPBACK}:{self.pubsub_port}"

    @property
    def console_url(self) -> str | None:
        """The web console the local cloud serves; None when it starts none."""
        return f"http://{LOOPBACK}:{self.console_port}/" if self.console_port else None

    @property
    def job_service_url(self) -> str | None:
        """The local job service (Vertex AI's stand-in), once its port is known."""
        return f"http://{LOOPBACK}:{self.job_service_port}" if self.job_service_port else None

    @property
    def model_server_url(self) -> str | None:
        """The local model server (the endpoint's stand-in), once its port is known."""
        return f"http://{LOOPBACK}:{self.model_server_port}" if self.model_server_port else None

    @property
    def bigquery_url(self) -> str | None:
        """The local BigQuery's REST endpoint; None until its port is chosen."""
        return f"http://{LOOPBACK}:{self.bigquery_port}" if self.bigquery_port else None

    @property
    def bigquery_grpc_host(self) -> str | None:
        """The local BigQuery's gRPC endpoint (the Storage Read API); None until chosen."""
        return f"{LOOPBACK}:{self.bigquery_grpc_port}" if self.bigquery_grpc_port else None

    @property
    def bigtable_host(self) -> str | None:
        """BIGTABLE_EMULATOR_HOST of every client; None until its port is chosen."""
        return f"{LOOPBACK}:{self.bigtable_port}" if self.bigtable_port else None

    @property
    def request_log_table(self) -> str:
        """Where the model server logs each request as Vertex AI's request-response
        logging does: the warehouse's serving-logs dataset."""
        dataset = self.runtime_settings().warehouse_dataset("serving-logs")
        return f"{self.project}.{dataset}.request_response_logging"

    @property
    def vertex_api_endpoint(self) -> str | None:
        """The Vertex AI endpoint twin, as a client's ``api_endpoint``, once its port is known."""
        return f"{LOOPBACK}:{self.vertex_endpoint_port}" if self.vertex_endpoint_port else None

    @property
    def vertex_tls_dir(self) -> Path:
        """The twin's local CA and certificate, and ``ca-bundle.pem`` that clients trust."""
        return self.state_dir / "vertex-endpoint"

    @property
    def notifications_topic(self) -> str:
        """Where the GCS emulator publishes object notifications (Eventarc's input)."""
        return "cascade-gcs-notifications"

    def absolute(self) -> LocalCloudSettings:
        """A copy whose paths are absolute (children run in other directories)."""
        root = self.repo_root.resolve()
        return self.model_copy(
            update={
                "repo_root": root,
                "state_dir": self._absolute_state_dir,
                "topology_file": (
                    self.topology_file
                    if self.topology_file.is_absolute()
                    else root / self.topology_file
                ),
            }
        )

    def runtime_settings(self) -> Settings:
        """The Settings every local process runs with, as Terraform sets them in the cloud."""
        return Settings(
            project=self.project,
            landing_bucket="cascade-landing",
            artifacts_bucket="cascade-artifacts",
            topic_prefix="cascade-",
            storage_emulator_host=self.gcs_url,
            pubsub_emulator_host=self.pubsub_host,
            job_service_url=self.job_service_url,
            deploy_target="local" if self.model_server_url else "vertex",
            deploy_model_server_url=self.model_server_url or "",
            claim_lease_s=self.claim_lease_s,
            bigquery_emulator_host=self.bigquery_url,
            bigquery_storage_emulator_host=self.bigquery_grpc_host,
        )

    def runtime_environment(self) -> dict[str, str]:
        """Environment variables that make ``load_settings()`` return runtime_settings()."""
        settings = self.runtime_settings()
        jobs = {"CASCADE_JOB_SERVICE_URL": self.job_service_url} if self.job_service_url else {}
        deploy = (
            {
                "CASCADE_DEPLOY_TARGET": "local",
                "CASCADE_DEPLOY_MODEL_SERVER_URL": self.model_server_url,
            }
            if self.model_server_url
            else {}
        )
        bundle = str(self.vertex_tls_dir / "ca-bundle.pem")
        vertex = (
            {
                "CASCADE_VERTEX_API_ENDPOINT": self.vertex_api_endpoint,
                "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": bundle,
                "REQUESTS_CA_BUNDLE": bundle,
            }
            if self.vertex_api_endpoint
            else {}
        )
        bigquery = {"BIGQUERY_EMULATOR_HOST": self.bigquery_url} if self.bigquery_url else {}
        if self.bigquery_grpc_host:
            bigquery["BIGQUERY_STORAGE_EMULATOR_HOST"] = self.bigquery_grpc_host
        bigtable = (
            {
                "BIGTABLE_EMULATOR_HOST": self.bigtable_host,
                # The precomputed answers' store (cascade.serving.precomputed)
                "CASCADE_PRECOMPUTED_INSTANCE": LOCAL_BIGTABLE_INSTANCE,
                "CASCADE_PRECOMPUTED_PROJECT": self.project,
            }
            if self.bigtable_host
            else {}
        )
        return {
            **jobs,
            **deploy,
            **vertex,
            **bigquery,
            **bigtable,
            "CASCADE_PROJECT": settings.project,
            "CASCADE_REGION": settings.region,
            "CASCADE_LANDING_BUCKET": settings.landing_bucket,
            "CASCADE_ARTIFACTS_BUCKET": settings.artifacts_bucket,
            "CASCADE_TOPIC_PREFIX": settings.topic_prefix,
            "CASCADE_CLAIM_LEASE_S": str(settings.claim_lease_s),
            "STORAGE_EMULATOR_HOST": self.gcs_url,
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "GOOGLE_CLOUD_PROJECT": settings.project,
        }

    def child_environment(self) -> dict[str, str]:
        """The environment of every child: ours, plus the runtime and local-cloud settings."""
        local = {
            f"CASCADE_LOCAL_{name.upper()}": str(value) for name, value in self.model_dump().items()
        }
        return {**os.environ, **self.runtime_environment(), **local, "PYTHONUNBUFFERED": "1"}
