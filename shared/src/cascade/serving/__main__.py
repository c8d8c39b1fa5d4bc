"""``python -m cascade.serving``: the model server under gunicorn — the serving image's
entry point on Vertex AI (``shared/Dockerfile.serving``) and the local cloud's model
server, configured by the same variables (``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``,
``AIP_PREDICT_ROUTE``, ``AIP_STORAGE_URI``; on Vertex AI also ``CASCADE_SERVING_RUN_ID``
and ``CASCADE_SERVING_MODE``, which the deployer sets; see ``server_settings``). Invalid
settings stop it at once with a message naming the variable.

The Flask app and its ``ModelServer`` are created here, before gunicorn forks, but
nothing is loaded and no client or thread exists until ``post_worker_init`` runs in each
worker: TensorFlow and the storage client are created after the fork (a model loaded
before the fork can hang the worker).
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from pydantic import ValidationError

from cascade.core.clients import make_storage_client
from cascade.core.observability import configure_logging
from cascade.core.settings import Settings, load_settings
from cascade.core.store import ArtifactStore
from cascade.core.warehouse import make_bigquery_client
from cascade.serving.app import create_app
from cascade.serving.precomputed import PrecomputedSettings, store_factory
from cascade.serving.request_log import RequestLog, ensure_request_log_table
from cascade.serving.server import ModelServer
from cascade.serving.server_settings import ModelServerSettings
from cascade.serving.uris import UriReader

__all__ = ["build_server", "main"]

_log = logging.getLogger("cascade.serving")


def build_server(settings: Settings, serving: ModelServerSettings) -> ModelServer:
    """A ModelServer whose clients are created on first use (in the worker)."""
    return ModelServer(
        artifacts=lambda: ArtifactStore(make_storage_client(settings), settings.artifacts_bucket),
        storage=lambda: _reader(settings),
        cache_dir=serving.cache_dir.resolve(),
        poll_interval_s=serving.poll_interval_s,
        static_model=(
            None if serving.storage_uri is None else (serving.model_name, serving.storage_uri)
        ),
        static_run_id=serving.run_id,
        static_mode=serving.mode,
        precomputed=store_factory(PrecomputedSettings(), settings.project),
        request_log=(
            None
            if serving.request_log_table is None
            else functools.partial(_request_log, settings, serving.request_log_table)
        ),
    )


def _request_log(settings: Settings, table: str) -> RequestLog:
    """The local cloud's request log (Vertex AI logs requests itself in the cloud)."""
    client = make_bigquery_client(settings)
    ensure_request_log_table(client, table)
    return RequestLog(client, table)


def _reader(settings: Settings) -> UriReader:
    client = make_storage_client(settings)
    return UriReader(lambda bucket: ArtifactStore(client, bucket))


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def _configure_tensorflow(threads: int) -> None:
    import tensorflow as tf  # after the fork

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def main() -> int:
    settings = load_settings()
    try:
        serving = ModelServerSettings()
    except ValidationError as error:
        print(f"cascade.serving: invalid settings: {error}", file=sys.stderr)
        return 2
    configure_logging(function_name="model-server", project=settings.project)
    server = build_server(settings, serving)

    def post_worker_init(worker: Any) -> None:
        _configure_tensorflow(serving.tf_threads)
        server.start()
        _log.info("model server worker %s ready: %s", worker.pid, server.datasets)

    options = {
        "bind": f"{serving.host}:{serving.port}",
        "workers": serving.workers,
        "threads": serving.threads,
        "worker_class": "gthread" if serving.threads > 1 else "sync",
        "timeout": serving.timeout_s,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "post_worker_init": post_worker_init,
        "proc_name": "cascade-model-server",
    }
    app = create_app(
        server,
        predict_route=serving.predict_route,
        health_route=serving.health_route,
        model_name=serving.model_name,
    )
    _Gunicorn(app, options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
