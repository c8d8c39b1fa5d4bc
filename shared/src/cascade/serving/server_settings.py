"""Settings of the local model server; every field is an environment variable
``CASCADE_SERVING_<FIELD>``. It binds 127.0.0.1 only."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ModelServerSettings"]


class ModelServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASCADE_SERVING_", frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="The address to bind: loopback locally.")
    port: int = Field(8501, gt=0, lt=65536, description="TF Serving's REST port by default.")
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes.")
    threads: int = Field(
        2, ge=1, le=64, description="Threads per worker (gthread, keep-alive, when > 1)."
    )
    cache_dir: Path = Field(Path(".cascade/model-cache"), description="Downloaded models.")
    poll_interval_s: float = Field(0.5, gt=0, description="How often serving.json is checked.")
    tf_threads: int = Field(1, ge=1, description="TensorFlow intra/inter-op threads per worker.")
    timeout_s: int = Field(120, ge=10, description="gunicorn worker timeout (model loads).")
