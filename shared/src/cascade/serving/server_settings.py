"""Settings of the model server: Vertex AI's custom-container variables (``AIP_*``) and
Cascade's own (``CASCADE_SERVING_<FIELD>``).

The same image and entry point (``python -m cascade.serving``) run on Vertex AI and in
the local cloud, with the same variables:

- ``AIP_HTTP_PORT`` — the port to listen on (Vertex AI: the first of the model's
  ``containerSpec.ports``, 8080 by default);
- ``AIP_HEALTH_ROUTE`` / ``AIP_PREDICT_ROUTE`` — the paths Vertex AI sends health checks
  and prediction requests to (the model's ``healthRoute`` / ``predictRoute``);
- ``AIP_STORAGE_URI`` — the model artifact to serve (Vertex AI: a Cloud Storage copy of
  the model's ``artifactUri``). When it is set the server serves that one model under
  ``model_name``; when not (the local cloud) it follows every dataset's
  ``models/<dataset>/serving.json`` in the artifacts bucket, with its traffic split.

It binds 127.0.0.1 unless told otherwise (the serving image sets ``0.0.0.0``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ModelServerSettings"]


class ModelServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASCADE_SERVING_", frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="The address to bind: loopback locally.")
    port: int = Field(
        8080,
        gt=0,
        lt=65536,
        validation_alias=AliasChoices("AIP_HTTP_PORT", "CASCADE_SERVING_PORT"),
        description="Vertex AI's AIP_HTTP_PORT (8080 by default there too).",
    )
    health_route: str = Field(
        "/health",
        validation_alias=AliasChoices("AIP_HEALTH_ROUTE", "CASCADE_SERVING_HEALTH_ROUTE"),
        description="GET: 200 once the model(s) are loaded, else 503.",
    )
    predict_route: str = Field(
        "/predict",
        validation_alias=AliasChoices("AIP_PREDICT_ROUTE", "CASCADE_SERVING_PREDICT_ROUTE"),
        description="POST: predictions of model_name (by its traffic split).",
    )
    storage_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("AIP_STORAGE_URI", "CASCADE_SERVING_STORAGE_URI"),
        description="The one model to serve (gs:// or a local path); unset: serving.json.",
    )
    model_name: str = Field(
        "model", min_length=1, description="The name predict_route and AIP_STORAGE_URI use."
    )
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes.")
    threads: int = Field(
        2, ge=1, le=64, description="Threads per worker (gthread, keep-alive, when > 1)."
    )
    cache_dir: Path = Field(Path(".cascade/model-cache"), description="Downloaded models.")
    poll_interval_s: float = Field(0.5, gt=0, description="How often serving.json is checked.")
    tf_threads: int = Field(1, ge=1, description="TensorFlow intra/inter-op threads per worker.")
    timeout_s: int = Field(120, ge=10, description="gunicorn worker timeout (model loads).")
    request_log_table: str | None = Field(
        None,
        description="project.dataset.table where each predict request is logged as Vertex "
        "AI's request-response logging does. Only where no Vertex AI endpoint logs them (the "
        "local cloud); unset: nothing is logged here.",
    )

    @field_validator("health_route", "predict_route")
    @classmethod
    def _a_path(cls, value: str) -> str:
        if not value.startswith("/") or "<" in value:
            raise ValueError(f"a route is a literal path starting with '/', not {value!r}")
        return value

    @field_validator("storage_uri")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None
