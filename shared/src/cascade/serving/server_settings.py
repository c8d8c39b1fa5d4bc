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

Serving one model, Vertex AI does not say which model version it is (no ``AIP_*``
variable carries the version id, and the id only exists after the upload that sets the
container's variables), so the Vertex AI deployer sets ``CASCADE_SERVING_RUN_ID`` (the
run that trained it) and ``CASCADE_SERVING_MODE`` (the dataset's serving mode): the
server reads the version from ``models/<model_name>/serving.json`` (the entry with that
run id) before it is healthy, and answers static or hybrid from the precomputed store
(``CASCADE_PRECOMPUTED_*``) under that version. Without a run id it is version 1 and
dynamic, as before.

It binds 127.0.0.1 unless told otherwise (the serving image sets ``0.0.0.0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.core.serving_config import SERVING_MODES, ServingMode
from cascade.core.settings import DATASET_NAME_PATTERN

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
    run_id: str | None = Field(
        None,
        description="With storage_uri: the run that trained that model; its version is read "
        "from models/<model_name>/serving.json (the server is not healthy until it is). "
        "Unset: version 1.",
    )
    mode: ServingMode = Field(
        "dynamic",
        description="With storage_uri: how that model answers (dynamic, static, hybrid); "
        "static and hybrid need run_id (answers are stored by version) and a precomputed "
        "store (CASCADE_PRECOMPUTED_INSTANCE). Without storage_uri the mode is each "
        "dataset's serving.json's.",
    )
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes.")
    threads: int = Field(
        2, ge=1, le=64, description="Threads per worker (gthread, keep-alive, when > 1)."
    )
    cache_dir: Path = Field(Path(".cascade/model-cache"), description="Downloaded models.")
    poll_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often every serving.json is checked, a backstop: deployers tell "
        "the server of their changes (POST /v1/models/<name>:reload), and a request for a "
        "model or version not loaded yet syncs at once. Each check lists models/.",
    )
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

    @field_validator("storage_uri", "run_id")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("mode", mode="before")
    @classmethod
    def _known_mode(cls, value: Any) -> Any:
        if value not in SERVING_MODES:
            raise ValueError(
                f"CASCADE_SERVING_MODE must be one of {', '.join(SERVING_MODES)}, not {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _one_model_settings_fit(self) -> ModelServerSettings:
        """Refuse at startup what would otherwise serve wrongly: a mode or run id that
        nothing reads, a static or hybrid model without the version its answers are
        stored under, a run id whose serving.json cannot be named."""
        if self.storage_uri is None and (self.run_id is not None or self.mode != "dynamic"):
            raise ValueError(
                "CASCADE_SERVING_RUN_ID and CASCADE_SERVING_MODE apply to the one model of "
                "AIP_STORAGE_URI, which is not set (without it, each dataset's mode and "
                "versions come from its serving.json)"
            )
        if self.mode != "dynamic" and self.run_id is None:
            raise ValueError(
                f"CASCADE_SERVING_MODE={self.mode} needs CASCADE_SERVING_RUN_ID: precomputed "
                "answers are stored by model version, which is read from serving.json by run id"
            )
        if self.run_id is not None and not DATASET_NAME_PATTERN.fullmatch(self.model_name):
            raise ValueError(
                f"CASCADE_SERVING_MODEL_NAME {self.model_name!r} is not a dataset name, so "
                "CASCADE_SERVING_RUN_ID cannot be looked up in models/<name>/serving.json"
            )
        return self
