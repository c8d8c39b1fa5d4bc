"""The model server's HTTP API (Flask): TF Serving's REST API and Vertex AI's routes.

- ``POST <AIP_PREDICT_ROUTE>`` (``/predict`` by default) — Vertex AI's custom-container
  predict route: the model ``model_name`` (the ``AIP_STORAGE_URI`` model on Vertex AI);
- ``GET <AIP_HEALTH_ROUTE>`` (``/health``) and ``GET /healthz`` — 200 once the worker
  has loaded what it serves, else 503;
- ``POST /v1/models/<name>:predict`` — by the traffic split of ``serving.json``;
- ``POST /v1/models/<name>/versions/<version>:predict`` — one version (canary checks);
- ``POST /v1/endpoints/<endpoint>/deployedModels/<id>:predict`` — Vertex AI's default
  container predict path (``endpoint`` is the dataset, ``id`` the version locally);
- ``GET /v1/models/<name>[/versions/<version>]`` — TF Serving's model status, and
  ``.../metadata`` — the ``serving_default`` signature (inputs and outputs);
- ``POST /v1/projects/<p>/locations/<l>/endpoints/<endpoint>:predict`` — Vertex AI's
  ``PredictionService.Predict`` over REST (``endpoint`` is the dataset name locally);
- ``POST /v1/models/<name>:reload`` — serving.json changed: every worker applies it.

Every predict route reads the body the same way and applies the same rules
(``cascade.serving.request_rules``): ``{"instances": [{input: value, ...}, ...],
"parameters": {...}}`` → ``{"predictions": [{output: value, ...}, ...]}``; the public
Vertex route adds ``deployedModelId``, ``model`` and ``modelVersionId``. A body that
breaks a rule is a 400 naming the instance and field. Every answer also says which version
answered and, per instance, whether its answer was precomputed: ``"model_version"`` and
``"precomputed": [bool, ...]`` (the public Vertex route: ``modelVersionId`` and
``metadata.precomputed``, fields of Vertex AI's ``PredictResponse``).

Serving modes (``serving.json``'s ``mode``): the version is chosen first (by the split,
or the one the route names), then ``dynamic`` asks that version's model; ``static``
looks up that version's precomputed answers only (a key without one: 404 naming it);
``hybrid`` looks up, then asks the model for the misses (and for everything while the
store is unreachable). A static or hybrid dataset on a server without a store: 503.

Errors: ``{"error": message}``, Google's ``{"error": {code, message, status}}`` on the
public Vertex route.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import flask

from cascade.core.serving_config import ServingMode
from cascade.serving import request_rules
from cascade.serving.precomputed import StoreUnavailableError, key_problem
from cascade.serving.request_rules import MAX_BODY_BYTES, MAX_INSTANCES, RequestError
from cascade.serving.server import ModelServer, ModelTable

if TYPE_CHECKING:
    from cascade.serving.servable import Servable

__all__ = ["MAX_BODY_BYTES", "MAX_INSTANCES", "Answer", "create_app"]

_log = logging.getLogger("cascade.serving.app")
_MODELS, _PREDICT = "/v1/models/", ":predict"
_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
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


def _read_body(stream: Any, content_length: int | None) -> bytes:
    """The body, never more than the limit plus one byte (so an oversized one is told)."""
    if content_length is not None and content_length > MAX_BODY_BYTES:
        raise ApiError(
            400,
            f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes "
            f"(this body has {content_length})",
        )
    data: bytes = stream.read(MAX_BODY_BYTES + 1 if content_length is None else content_length)
    return data


@dataclass(frozen=True)
class Answer:
    """One predict request's answer: which version answered, each instance's entity key
    (None when the model has no passthrough key) and whether it came from the store."""

    dataset: str
    version: str
    mode: ServingMode
    keys: list[str | None]
    predictions: list[dict[str, Any]]
    precomputed: list[bool]

    def body(self) -> dict[str, Any]:
        """TF Serving's ``{"predictions": [...]}`` plus which version answered and, per
        instance, whether the answer was precomputed (the same shape in every mode)."""
        return {
            "predictions": self.predictions,
            "model_version": self.version,
            "precomputed": self.precomputed,
        }


def _predict(server: ModelServer, name: str, version: str | None, data: bytes) -> Answer:
    """The one request path of every predict route: rules, version, answers."""
    try:
        body = request_rules.parse_body(data)
    except RequestError as error:
        raise ApiError(400, error.message) from None
    table, servable = _route(server, name, version)  # the version first, by the split
    try:
        checked = request_rules.columns(body.instances, servable.inputs)
    except RequestError as error:
        raise ApiError(400, error.message) from None
    keys = _entity_keys(checked, servable)
    mode = table.state.mode
    if mode == "dynamic" or request_rules.wants_model_answers(body.parameters):
        predictions, precomputed = _model(name, servable, checked), [False] * len(keys)
    else:
        predictions, precomputed = _lookup(server, table, servable, checked, keys)
    # Every request passes here once: the version that answered, the keys and which
    # answers were precomputed are all known.
    server.log_request(name, servable.version, keys, precomputed, servable.key)
    return Answer(name, servable.version, mode, keys, predictions, precomputed)


def _route(server: ModelServer, name: str, version: str | None) -> tuple[ModelTable, Servable]:
    """The table and the version that answers: ``version``, or one drawn by the split."""
    table = server.table(name, version)
    if table is None:
        raise ApiError(404, f"Servable not found for request: model {name!r}")
    servable = table.choose() if version is None else table.versions.get(version)
    if servable is None and version is None:  # nothing routable here yet: catch up once
        table = server.table(name, refresh=True) or table
        servable = table.choose()
    if servable is None:
        raise _unavailable(table, version)
    return table, servable


def _entity_keys(checked: dict[str, list[Any]], servable: Servable) -> list[str | None]:
    """Each instance's entity key (``{"b64"}`` keys as UTF-8 text; None when not text)."""
    count = len(next(iter(checked.values()), []))
    if servable.key is None:
        return [None] * count
    keys: list[str | None] = []
    for value in checked[servable.key]:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                value = None
        keys.append(value)
    return keys


def _model(name: str, servable: Servable, checked: dict[str, list[Any]]) -> list[dict[str, Any]]:
    try:
        return servable.predict_columns(checked)
    except Exception as error:  # noqa: BLE001 - a checked request the model cannot answer
        _log.exception("%s v%s: predict failed", name, servable.version)
        raise ApiError(500, f"the model failed to predict: {type(error).__name__}") from None


def _lookup(
    server: ModelServer,
    table: ModelTable,
    servable: Servable,
    checked: dict[str, list[Any]],
    keys: list[str | None],
) -> tuple[list[dict[str, Any]], list[bool]]:
    """Static and hybrid: the chosen version's precomputed answers (never another
    version's), and in hybrid the model for the keys without one."""
    dataset, version, mode = table.dataset, servable.version, table.state.mode
    store = server.precomputed_store()
    if store is None:
        raise ApiError(
            503,
            f"model {dataset!r} is served {mode} but this model server has no precomputed "
            "store (set CASCADE_PRECOMPUTED_INSTANCE)",
        )
    if servable.key is None:
        raise ApiError(
            503,
            f"model {dataset!r} version {version} has no passthrough key input; {mode} "
            "serving looks answers up by key",
        )
    wanted = [key for key in keys if key is not None and key_problem(key) is None]
    try:
        found = store.read(dataset, version, wanted) if wanted else {}
    except StoreUnavailableError as error:
        if mode == "static":
            raise ApiError(503, f"the precomputed store is unavailable: {error}") from None
        _log.warning("%s v%s: %s; the model answers", dataset, version, error)
        found = {}
    missing = [index for index, key in enumerate(keys) if key is None or key not in found]
    if missing and mode == "static":
        first = keys[missing[0]]
        shown = repr(first if first is None or len(first) <= 100 else first[:100] + "...")
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ApiError(
            404,
            f"no precomputed answer for key {shown}{more}: model {dataset!r} version "
            f"{version} is served static (lookup only)",
        )
    predictions: list[dict[str, Any]] = [{} for _ in keys]
    for index, key in enumerate(keys):
        if key is not None and key in found:
            predictions[index] = {**found[key], servable.key: key}
    if missing:
        subset = {name: [column[i] for i in missing] for name, column in checked.items()}
        for index, prediction in zip(missing, _model(dataset, servable, subset), strict=True):
            predictions[index] = prediction
    skipped = set(missing)
    return predictions, [index not in skipped for index in range(len(keys))]


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
    return _read_body(flask.request.stream, flask.request.content_length)


class _FastPredict:
    """WSGI: ``POST /v1/models/<name>:predict`` — the hot path — without Flask's request
    and routing machinery (about 0.3 ms a request here); everything else goes to Flask.
    The body is read and checked by the same ``_read_body`` and ``_predict``."""

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
        try:
            raw_length = environ.get("CONTENT_LENGTH")
            length = int(raw_length) if raw_length else None
        except ValueError:
            length = None
        try:
            data = _read_body(environ["wsgi.input"], length)
            name = path[len(_MODELS) : -len(_PREDICT)]
            answer = _predict(self._server, name, None, data)
            status, body = "200 OK", json.dumps(answer.body()).encode()
        except ApiError as error:
            status = f"{error.status} {_REASONS.get(error.status, 'Error')}"
            body = json.dumps({"error": error.message}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response(status, headers)
        return [body]


def create_app(
    server: ModelServer,
    *,
    predict_route: str = "/predict",
    health_route: str = "/health",
    model_name: str = "model",
) -> Any:
    """The WSGI app over ``server`` (which the gunicorn worker starts after forking);
    ``predict_route`` and ``health_route`` are Vertex AI's ``AIP_PREDICT_ROUTE`` and
    ``AIP_HEALTH_ROUTE``, answering for ``model_name``."""
    app = _flask_app(server, predict_route, health_route, model_name)
    return _FastPredict(app, server)


def _flask_app(
    server: ModelServer, predict_route: str, health_route: str, model_name: str
) -> flask.Flask:
    app = flask.Flask("cascade.serving")
    app.config["MAX_CONTENT_LENGTH"] = None  # _read_body enforces the limit, as JSON

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> flask.Response:
        if flask.request.path.startswith("/v1/projects/"):
            google = {
                "code": error.status,
                "message": error.message,
                "status": _GOOGLE_STATUS.get(error.status, "UNKNOWN"),
            }
            return _json({"error": google}, error.status)
        return _json({"error": error.message}, error.status)

    @app.errorhandler(404)
    def not_found(_: Exception) -> flask.Response:
        return api_error(ApiError(404, f"no route {flask.request.path}"))

    @app.errorhandler(405)
    def wrong_method(_: Exception) -> flask.Response:
        return _json({"error": f"{flask.request.method} is not allowed here"}, 405)

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> flask.Response:
        return _json(_predict(server, name, None, _body()).body())

    @app.post("/v1/models/<name>/versions/<version>:predict")
    def predict_version(name: str, version: str) -> flask.Response:
        return _json(_predict(server, name, version, _body()).body())

    @app.post("/v1/endpoints/<endpoint>/deployedModels/<deployed_model>:predict")
    def deployed_model_predict(endpoint: str, deployed_model: str) -> flask.Response:
        return _json(_predict(server, endpoint, deployed_model, _body()).body())

    def container_predict() -> flask.Response:
        return _json(_predict(server, model_name, None, _body()).body())

    app.add_url_rule(predict_route, "container_predict", container_predict, methods=["POST"])

    @app.post("/v1/projects/<project>/locations/<location>/endpoints/<endpoint>:predict")
    def vertex_predict(project: str, location: str, endpoint: str) -> flask.Response:
        answer = _predict(server, endpoint, None, _body())
        model = f"projects/{project}/locations/{location}/models/{endpoint}"
        return _json(
            {  # PredictResponse: the version is modelVersionId, the flags its metadata
                "predictions": answer.predictions,
                "deployedModelId": answer.version,
                "model": model,
                "modelVersionId": answer.version,
                "modelDisplayName": endpoint,
                "metadata": {"precomputed": answer.precomputed},
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

    def health() -> flask.Response:
        if not server.healthy():
            return _json({"status": "starting"}, 503)
        return _json({"status": "ok", "models": server.datasets})

    app.add_url_rule("/healthz", "healthz", health, methods=["GET"])
    if health_route != "/healthz":
        app.add_url_rule(health_route, "container_health", health, methods=["GET"])

    return app
