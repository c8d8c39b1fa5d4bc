"""The model server's HTTP API (Flask): TF Serving's REST API and Vertex AI's predict route.

- ``POST /v1/models/<name>:predict`` — by the traffic split of ``serving.json``;
- ``POST /v1/models/<name>/versions/<version>:predict`` — one version (canary checks);
- ``GET /v1/models/<name>[/versions/<version>]`` — TF Serving's model status, and
  ``.../metadata`` — the ``serving_default`` signature (inputs and outputs);
- ``POST /v1/projects/<p>/locations/<l>/endpoints/<endpoint>:predict`` — Vertex AI's
  ``PredictionService.Predict`` over REST (``endpoint`` is the dataset name locally);
- ``POST /v1/models/<name>:reload`` — serving.json changed: every worker applies it;
- ``GET /healthz`` — 200 once the worker has loaded what serving.json lists.

Request ``{"instances": [{feature: value, ...}, ...]}`` (row format), response
``{"predictions": [{output: value, ...}, ...]}``; the Vertex route adds
``deployedModelId``, ``model`` and ``modelVersionId``. Errors: ``{"error": message}`` on
the TF Serving routes, Google's ``{"error": {code, message, status}}`` on Vertex's.
"""

from __future__ import annotations

import json
from typing import Any

import flask

from cascade.serving.server import ModelServer, ModelTable

__all__ = ["MAX_INSTANCES", "create_app"]

MAX_INSTANCES = 10_000
MAX_BODY_BYTES = 32 * 1024 * 1024
_MODELS, _PREDICT = "/v1/models/", ":predict"
_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    413: "Request Entity Too Large",
    503: "Service Unavailable",
}
_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE", 500: "INTERNAL"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(body: Any, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


def _instances(data: bytes) -> list[Any]:
    try:
        body = json.loads(data)
    except ValueError as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict) or "instances" not in body:
        raise ApiError(400, 'the body must be a JSON object {"instances": [...]} (row format)')
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise ApiError(400, '"instances" must be a non-empty list of JSON objects')
    if len(instances) > MAX_INSTANCES:
        raise ApiError(400, f"at most {MAX_INSTANCES} instances per request")
    return instances


def _predict(
    server: ModelServer, name: str, version: str | None, data: bytes
) -> tuple[list[dict[str, Any]], str]:
    from cascade.serving.servable import InputError  # TensorFlow: after the fork

    instances = _instances(data)
    table = server.table(name, version)
    if table is None:
        raise ApiError(404, f"Servable not found for request: model {name!r}")
    servable = table.choose() if version is None else table.versions.get(version)
    if servable is None and version is None:  # nothing routable here yet: catch up once
        table = server.table(name, refresh=True) or table
        servable = table.choose()
    if servable is None:
        raise _unavailable(table, version)
    try:
        return servable.predict(instances), servable.version
    except InputError as error:
        raise ApiError(400, str(error)) from None


def _unavailable(table: ModelTable, version: str | None) -> ApiError:
    if version is None:
        return ApiError(503, f"model {table.dataset!r} has no version taking traffic")
    if version in table.failures:
        return ApiError(503, f"version {version} failed to load: {table.failures[version]}")
    return ApiError(
        404, f"Servable not found for request: model {table.dataset!r} version {version}"
    )


def _status(table: ModelTable, version: str | None) -> dict[str, Any]:
    statuses = []
    for deployed in table.state.deployed:
        if version is not None and deployed.version != version:
            continue
        error = table.failures.get(deployed.version)
        loaded = deployed.version in table.versions
        statuses.append(
            {
                "version": deployed.version,
                "state": "AVAILABLE" if loaded else ("END" if error else "LOADING"),
                "status": {
                    "error_code": "UNKNOWN" if error else "OK",
                    "error_message": error or "",
                },
            }
        )
    return {"model_version_status": statuses}


def _body() -> bytes:
    return flask.request.get_data(cache=False)


class _FastPredict:
    """WSGI: ``POST /v1/models/<name>:predict`` — the hot path — without Flask's request
    and routing machinery (about 0.3 ms a request here); everything else goes to Flask."""

    def __init__(self, flask_app: flask.Flask, server: ModelServer) -> None:
        self.flask_app = flask_app
        self._server = server

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path: str = environ.get("PATH_INFO", "")
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or not path.startswith(_MODELS)
            or not path.endswith(_PREDICT)
            or "/" in path[len(_MODELS) : -len(_PREDICT)]
        ):
            return self.flask_app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            if length > MAX_BODY_BYTES:
                raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            data = environ["wsgi.input"].read(length)
            name = path[len(_MODELS) : -len(_PREDICT)]
            predictions, _ = _predict(self._server, name, None, data)
            status, body = "200 OK", json.dumps({"predictions": predictions}).encode()
        except ApiError as error:
            status = f"{error.status} {_REASONS.get(error.status, 'Error')}"
            body = json.dumps({"error": error.message}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response(status, headers)
        return [body]


def create_app(server: ModelServer) -> Any:
    """The WSGI app over ``server`` (which the gunicorn worker starts after forking)."""
    return _FastPredict(_flask_app(server), server)


def _flask_app(server: ModelServer) -> flask.Flask:
    app = flask.Flask("cascade.serving")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.errorhandler(ApiError)
    def tf_serving_error(error: ApiError) -> flask.Response:
        if flask.request.path.startswith("/v1/projects/"):
            google = {
                "code": error.status,
                "message": error.message,
                "status": _GOOGLE_STATUS.get(error.status, "UNKNOWN"),
            }
            return _json({"error": google}, error.status)
        return _json({"error": error.message}, error.status)

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> flask.Response:
        predictions, _ = _predict(server, name, None, _body())
        return _json({"predictions": predictions})

    @app.post("/v1/models/<name>/versions/<version>:predict")
    def predict_version(name: str, version: str) -> flask.Response:
        predictions, _ = _predict(server, name, version, _body())
        return _json({"predictions": predictions})

    @app.post("/v1/projects/<project>/locations/<location>/endpoints/<endpoint>:predict")
    def vertex_predict(project: str, location: str, endpoint: str) -> flask.Response:
        predictions, version = _predict(server, endpoint, None, _body())
        model = f"projects/{project}/locations/{location}/models/{endpoint}"
        return _json(
            {
                "predictions": predictions,
                "deployedModelId": version,
                "model": model,
                "modelVersionId": version,
                "modelDisplayName": endpoint,
            }
        )

    @app.post("/v1/models/<name>:reload")
    def reload(name: str) -> flask.Response:
        server.notify_changed()
        table = server.table(name)
        return _json({"model": name, "generation": None if table is None else table.generation})

    @app.get("/v1/models/<name>")
    def model_status(name: str) -> flask.Response:
        return _status_response(name, None)

    @app.get("/v1/models/<name>/versions/<version>")
    def version_status(name: str, version: str) -> flask.Response:
        return _status_response(name, version)

    @app.get("/v1/models/<name>/metadata")
    def model_metadata(name: str) -> flask.Response:
        return _metadata_response(name, None)

    @app.get("/v1/models/<name>/versions/<version>/metadata")
    def version_metadata(name: str, version: str) -> flask.Response:
        return _metadata_response(name, version)

    def _metadata_response(name: str, version: str | None) -> flask.Response:
        table = server.table(name, version)
        if table is None:
            raise ApiError(404, f"Servable not found for request: model {name!r}")
        servable = table.versions.get(version) if version else table.latest()
        if servable is None:
            raise _unavailable(table, version)
        spec = {"name": name, "signature_name": "", "version": servable.version}
        return _json({"model_spec": spec, "metadata": servable.signature_metadata()})

    def _status_response(name: str, version: str | None) -> flask.Response:
        table = server.table(name, version)
        if table is None:
            raise ApiError(404, f"Could not find any versions of model {name}")
        status = _status(table, version)
        if not status["model_version_status"]:
            raise ApiError(404, f"Could not find version {version} of model {name}")
        return _json(status)

    @app.get("/healthz")
    def healthz() -> flask.Response:
        if not server.ready.is_set():
            return _json({"status": "starting"}, 503)
        return _json({"status": "ok", "models": server.datasets})

    return app
