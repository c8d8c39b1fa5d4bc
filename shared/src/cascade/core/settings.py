"""Runtime settings, read once at the edge from the environment.

Terraform sets these variables on every deployed function; the local cloud sets the
same ones on every process it starts. Library code receives a ``Settings`` object and
never reads ``os.environ`` itself.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.core.grants import IDENTITY_ENV, LocalIdentity
from cascade.core.store import DEFAULT_UPDATE_ATTEMPTS

__all__ = ["DATASET_NAME_PATTERN", "Settings", "load_settings"]

DATASET_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class Settings(BaseSettings):
    """Where Cascade runs: project, region, bucket and topic names, limits."""

    model_config = SettingsConfigDict(env_prefix="CASCADE_", frozen=True, extra="ignore")

    project: str = Field("cascade-local", description="Google Cloud project id.")
    region: str = Field("us-central1", description="Region of functions, jobs, endpoints.")
    landing_bucket: str = Field("cascade-landing", description="Bucket where data lands.")
    artifacts_bucket: str = Field("cascade-artifacts", description="Run records, models.")
    topic_prefix: str = Field("cascade-", description="Topic id = prefix + logical name.")
    function_name: str = Field(
        "local",
        validation_alias=AliasChoices("CASCADE_FUNCTION_NAME", "K_SERVICE"),
        description="Which function this process serves (Cloud Run sets K_SERVICE).",
    )
    function_timeout_s: int = Field(540, gt=0, description="A function's request timeout.")
    claim_lease_s: int = Field(
        60,
        gt=0,
        description="A step's claim outlives its owner's last heartbeat by this much; then "
        "a redelivery takes the step over (a crashed instance's work resumes).",
    )
    max_event_age_s: int = Field(86400, gt=0, description="Older events are dropped.")
    run_update_attempts: int = Field(
        DEFAULT_UPDATE_ATTEMPTS, gt=0, description="Optimistic-update retries."
    )
    publish_timeout_s: float = Field(30.0, gt=0)
    trainer_image: str = Field("", description="Container image of the trainer (Vertex AI).")
    jobs_service_account: str = Field("", description="Service account Vertex AI jobs run as.")
    job_service_url: str | None = Field(
        None, description="The local job service (http://127.0.0.1:<port>); unset: Vertex AI."
    )
    job_timeout_s: int = Field(
        7 * 24 * 3600, gt=0, description="Longest a training job may run (Vertex AI timeout)."
    )
    vertex_tensorboard: str | None = Field(
        None,
        pattern=r"^projects/[a-z0-9.:-]+/locations/[a-z0-9-]+/tensorboards/[a-z0-9-]+$",
        description="The Vertex AI TensorBoard (projects/P/locations/R/tensorboards/ID) that "
        "backs the trainer's Vertex AI Experiments; only a cloud deployment sets it (Terraform), "
        "the Vertex AI runner passes it to the jobs. Unset: the trainer logs nothing to Vertex AI.",
    )
    deploy_target: Literal["vertex", "local"] = Field(
        "vertex", description="Where deploy puts models: a Vertex AI endpoint, or the local server."
    )
    deploy_model_server_url: str = Field("", description="The local model server (local target).")
    serving_image: str = Field(
        "", description="The serving container CI built (shared/Dockerfile.serving), for Vertex AI."
    )
    local_identity: LocalIdentity | None = Field(
        None,
        validation_alias=AliasChoices(IDENTITY_ENV),
        description="The local cloud's identity for this process (its service account and "
        "grants, from the topology); the clients refuse what it lacks. Unset on Google "
        "Cloud, where IAM does that.",
    )
    storage_emulator_host: str | None = Field(
        None, validation_alias=AliasChoices("STORAGE_EMULATOR_HOST")
    )
    pubsub_emulator_host: str | None = Field(
        None, validation_alias=AliasChoices("PUBSUB_EMULATOR_HOST")
    )
    bigquery_emulator_host: str | None = Field(
        None,
        validation_alias=AliasChoices("BIGQUERY_EMULATOR_HOST"),
        description="The local BigQuery's REST endpoint (http://127.0.0.1:<port>).",
    )
    bigquery_storage_emulator_host: str | None = Field(
        None,
        validation_alias=AliasChoices("BIGQUERY_STORAGE_EMULATOR_HOST"),
        description="The local BigQuery's gRPC endpoint (127.0.0.1:<port>): its Storage "
        "Read API, which batch scoring reads tables with.",
    )

    @field_validator("landing_bucket", "artifacts_bucket")
    @classmethod
    def _valid_bucket_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", value):
            raise ValueError(f"not a valid bucket name: {value!r}")
        return value

    def topic_id(self, logical_name: str) -> str:
        """The real topic id of a logical topic from the topology."""
        return f"{self.topic_prefix}{logical_name}"

    def topic_path(self, logical_name: str) -> str:
        return f"projects/{self.project}/topics/{self.topic_id(logical_name)}"

    def warehouse_dataset(self, logical_name: str) -> str:
        """The real BigQuery dataset id of a logical warehouse dataset from the topology:
        ``<topic_prefix><name>`` with ``-`` written ``_`` (dataset ids take no ``-``)."""
        return f"{self.topic_prefix}{logical_name}".replace("-", "_")

    def bucket_for(self, logical_name: str) -> str:
        """The real bucket name of a logical bucket from the topology."""
        names = {"landing": self.landing_bucket, "artifacts": self.artifacts_bucket}
        try:
            return names[logical_name]
        except KeyError:
            raise ValueError(f"unknown logical bucket {logical_name!r}") from None


@cache
def load_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
