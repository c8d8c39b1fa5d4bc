"""Vertex AI's endpoint twin: ``PredictionService`` and ``EndpointService.GetEndpoint``.

A user's unmodified client code — ``aiplatform_v1.PredictionServiceClient`` over REST or
gRPC, or ``aiplatform.init(api_endpoint=...)`` then ``aiplatform.Endpoint(name).predict``
— works against the local cloud. One TLS port on loopback serves both transports, as
``{region}-aiplatform.googleapis.com:443`` does (see ``tls_front``):

- gRPC: ``/google.cloud.aiplatform.v1.PredictionService/Predict`` and ``/RawPredict``,
  ``/google.cloud.aiplatform.v1.EndpointService/GetEndpoint``, (de)serialised with the
  ``aiplatform_v1`` types; errors are gRPC status codes;
- REST: ``POST /v1/{endpoint}:predict``, ``POST /v1/{endpoint}:rawPredict``,
  ``GET /v1/{endpoint}`` — the proto3 JSON mapping; errors are
  ``{"error": {"code", "message", "status"}}``.

Names (the local deployer's naming, mapped as the Vertex deployer names things):

- endpoint ``projects/{project}/locations/{region}/endpoints/{dataset}`` — the dataset's
  ``serving.json`` (``endpoint`` is the dataset locally); display name = the dataset,
  label ``cascade-dataset``;
- deployed model id = model version id = the serving.json version (``"1"``, ``"2"``, ...),
  display name ``{dataset}-v{version}``, model ``projects/{project}/locations/{region}/
  models/{dataset}`` (display name = the dataset);
- ``traffic_split`` = serving.json's ``traffic``.

Predictions are forwarded to the model server's Vertex predict route, so the request
rules live in one place (the server); its answers and errors are translated.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, NoReturn

import grpc
import requests
from google.api import httpbody_pb2  # type: ignore[import-untyped]
from google.cloud import aiplatform_v1
from google.protobuf import json_format
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from cascade.core.clients import make_storage_client
from cascade.core.store import ArtifactStore
from cascade.deploy.deployer import label_value
from cascade.localcloud.local_settings import LOOPBACK, LocalCloudSettings
from cascade.localcloud.tls_front import AlpnFront, TlsFiles, local_certificates
from cascade.serving.state import ServingState, read_serving_state

__all__ = ["EndpointTwin", "RunningTwin", "VertexError", "main", "serve"]

_log = logging.getLogger("cascade.localcloud.vertex_endpoint")
ServingReader = Callable[[str], "tuple[ServingState, int] | None"]
_NAME = re.compile(r"^projects/([^/]+)/locations/([^/]+)/endpoints/([^/:]+)$")
_REST = re.compile(
    r"^/v1/(projects/[^/]+/locations/[^/]+/endpoints/[^/:]+)(:predict|:rawPredict)?$"
)
_MAX_BODY_BYTES = 32 * 1024 * 1024
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_FROM_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class VertexError(Exception):
    """An error as Vertex AI returns it: a gRPC status code (its HTTP status over REST)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    def google_json(self) -> dict[str, Any]:
        return {
            "error": {"code": self.http_status, "message": self.message, "status": self.code.name}
        }


class EndpointTwin:
    """The services' behaviour, transport-free: proto-plus messages in and out."""

    def __init__(
        self,
        *,
        project: str,
        region: str,
        model_server_url: str,
        serving_state: ServingReader,
        timeout_s: float = 60.0,
    ) -> None:
        self._project = project
        self._region = region
        self._url = model_server_url.rstrip("/")
        self._serving_state = serving_state
        self._timeout_s = timeout_s
        self._sessions = threading.local()

    # -- EndpointService --------------------------------------------------------------------

    def get_endpoint(self, name: str) -> aiplatform_v1.Endpoint:
        project, location, dataset, state, generation = self._resolve(name, "get")
        model = _model_name(project, location, dataset)
        versions = state.deployed
        return aiplatform_v1.Endpoint(
            name=name,
            display_name=dataset,
            deployed_models=[
                aiplatform_v1.DeployedModel(
                    id=version.version,
                    model=model,
                    model_version_id=version.version,
                    display_name=f"{dataset}-v{version.version}",
                    create_time=version.deployed_at,
                )
                for version in versions
            ],
            traffic_split={version: share for version, share in state.traffic.items() if share > 0},
            etag=str(generation),
            labels={"cascade-dataset": label_value(dataset)},
            create_time=min((item.deployed_at for item in state.versions), default=None)
            or state.updated_at,
            update_time=state.updated_at,
        )

    # -- PredictionService ------------------------------------------------------------------

    def predict(self, request: aiplatform_v1.PredictRequest) -> aiplatform_v1.PredictResponse:
        project, location, dataset, _, _ = self._resolve(request.endpoint, "predict")
        message = json.loads(aiplatform_v1.PredictRequest.to_json(request, indent=None))
        body: dict[str, Any] = {"instances": message.get("instances", [])}
        if "parameters" in request:
            body["parameters"] = message.get("parameters")
        answer = self._forward(project, location, dataset, json.dumps(body).encode())
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list):
            raise VertexError(
                grpc.StatusCode.INTERNAL, "the model server's answer has no predictions list"
            )
        deployed_model_id = str(answer.get("deployedModelId", ""))
        response = aiplatform_v1.PredictResponse(
            deployed_model_id=deployed_model_id,
            model=_model_name(project, location, dataset),
            model_version_id=str(answer.get("modelVersionId", deployed_model_id)),
            model_display_name=dataset,
        )
        json_format.ParseDict(
            {"predictions": predictions}, aiplatform_v1.PredictResponse.pb(response)
        )
        return response

    def raw_predict(
        self, endpoint: str, content_type: str, data: bytes
    ) -> tuple[bytes, dict[str, str]]:
        """The container's answer as it is, and Vertex's ``X-Vertex-AI-*`` headers."""
        project, location, dataset, _, _ = self._resolve(endpoint, "predict")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise VertexError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the model server accepts application/json, not {content_type!r}",
            )
        answer = self._forward(project, location, dataset, data)
        deployed_model_id = str(answer.get("deployedModelId", ""))
        headers = {
            "X-Vertex-AI-Endpoint-Id": dataset,
            "X-Vertex-AI-Deployed-Model-Id": deployed_model_id,
            "X-Vertex-AI-Model": _model_name(project, location, dataset),
            "X-Vertex-AI-Model-Display-Name": dataset,
            "X-Vertex-AI-Model-Version-Id": str(answer.get("modelVersionId", deployed_model_id)),
        }
        return json.dumps({"predictions": answer.get("predictions")}).encode(), headers

    # -- helpers ----------------------------------------------------------------------------

    def _resolve(self, name: str, verb: str) -> tuple[str, str, str, ServingState, int]:
        match = _NAME.match(name)
        if match is None:
            raise VertexError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid Endpoint resource name: {name!r}; expected "
                "projects/{project}/locations/{location}/endpoints/{endpoint}.",
            )
        project, location, dataset = match.groups()
        if project != self._project:
            raise VertexError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission 'aiplatform.endpoints.{verb}' denied on resource "
                f"'//aiplatform.googleapis.com/{name}' (or it may not exist).",
            )
        not_found = VertexError(grpc.StatusCode.NOT_FOUND, f"Endpoint `{name}` not found.")
        if location != self._region:
            raise not_found
        try:
            found = self._serving_state(dataset)
        except ValueError:  # not a dataset name
            raise not_found from None
        except Exception as error:  # noqa: BLE001 - the bucket did not answer: retry later
            _log.warning("reading serving.json of %s failed: %s", dataset, error)
            raise VertexError(
                grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable."
            ) from None
        if found is None or found[0].target != "local" or found[0].endpoint != dataset:
            raise not_found
        state, generation = found
        return project, location, dataset, state, generation

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._sessions, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # loopback: no proxy
            self._sessions.session = session
        return session

    def _forward(self, project: str, location: str, dataset: str, body: bytes) -> dict[str, Any]:
        url = f"{self._url}/v1/projects/{project}/locations/{location}/endpoints/{dataset}:predict"
        try:
            response = self._session().post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout_s,
            )
        except requests.RequestException as error:
            raise VertexError(
                grpc.StatusCode.UNAVAILABLE, f"The model server did not answer: {error}"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200:
            detail = answer.get("error") if isinstance(answer, dict) else None
            message = detail.get("message") if isinstance(detail, dict) else detail
            code = _FROM_HTTP.get(response.status_code, grpc.StatusCode.INTERNAL)
            raise VertexError(code, str(message or response.text[:500]))
        if not isinstance(answer, dict):
            raise VertexError(grpc.StatusCode.INTERNAL, "the model server's answer is not JSON")
        return answer


def _model_name(project: str, location: str, dataset: str) -> str:
    return f"projects/{project}/locations/{location}/models/{dataset}"


# -- REST ------------------------------------------------------------------------------------


def rest_app(twin: EndpointTwin) -> Callable[..., Any]:
    """The WSGI app of the REST transport (HTTP/1.1 behind the TLS front)."""

    def json_response(body: dict[str, Any], status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    def handle(request: Request) -> Response:
        match = _REST.match(request.path)
        if match is None:
            raise VertexError(grpc.StatusCode.NOT_FOUND, f"No such method: {request.path}")
        name, verb = match.groups()
        integer_enums = "enum-encoding=int" in request.args.get("$alt", "")
        if verb is None:
            if request.method != "GET":
                raise VertexError(grpc.StatusCode.UNIMPLEMENTED, f"{request.method} {name}")
            endpoint = twin.get_endpoint(name)
            text = aiplatform_v1.Endpoint.to_json(
                endpoint,
                use_integers_for_enums=integer_enums,
                indent=None,
                always_print_fields_with_no_presence=False,
            )
            return Response(text, mimetype="application/json")
        if request.method != "POST":
            raise VertexError(grpc.StatusCode.UNIMPLEMENTED, f"{request.method} {name}{verb}")
        if (request.content_length or 0) > _MAX_BODY_BYTES:
            raise VertexError(grpc.StatusCode.INVALID_ARGUMENT, "Request payload too large.")
        data = request.get_data(cache=False)
        if verb == ":rawPredict":
            content_type = request.headers.get("Content-Type", "")
            body, headers = twin.raw_predict(name, content_type, data)
            return Response(body, mimetype="application/json", headers=headers)
        try:
            predict = aiplatform_v1.PredictRequest.from_json(data or b"{}")
        except (json_format.ParseError, ValueError) as error:
            raise VertexError(
                grpc.StatusCode.INVALID_ARGUMENT, f"Invalid JSON payload received. {error}"
            ) from None
        predict.endpoint = name
        response = twin.predict(predict)
        return Response(
            aiplatform_v1.PredictResponse.to_json(
                response,
                use_integers_for_enums=integer_enums,
                indent=None,
                always_print_fields_with_no_presence=False,
            ),
            mimetype="application/json",
        )

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = handle(request)
        except VertexError as error:
            response = json_response(error.google_json(), error.http_status)
        except Exception:  # noqa: BLE001 - Google's shape, never a bare 500 page
            _log.exception("%s %s failed", request.method, request.path)
            internal = VertexError(grpc.StatusCode.INTERNAL, "Internal error encountered.")
            response = json_response(internal.google_json(), internal.http_status)
        return response(environ, start_response)

    return app


# -- gRPC ------------------------------------------------------------------------------------


def _abort(context: grpc.ServicerContext, error: VertexError) -> NoReturn:
    context.abort(error.code, error.message)
    raise AssertionError("unreachable")  # context.abort raises


def _unary(
    call: Callable[[Any], Any], deserialize: Callable[[bytes], Any], serialize: Any
) -> grpc.RpcMethodHandler:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return call(request)
        except VertexError as error:
            _abort(context, error)
        except Exception:  # noqa: BLE001 - a status code, as Vertex AI answers
            _log.exception("gRPC call failed")
            _abort(context, VertexError(grpc.StatusCode.INTERNAL, "Internal error encountered."))

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=deserialize, response_serializer=serialize
    )


def grpc_handlers(twin: EndpointTwin) -> list[grpc.GenericRpcHandler]:
    def raw_predict(request: aiplatform_v1.RawPredictRequest) -> httpbody_pb2.HttpBody:
        body = request.http_body
        data, _ = twin.raw_predict(request.endpoint, body.content_type, body.data)
        return httpbody_pb2.HttpBody(content_type="application/json", data=data)

    prediction = {
        "Predict": _unary(
            twin.predict,
            aiplatform_v1.PredictRequest.deserialize,
            aiplatform_v1.PredictResponse.serialize,
        ),
        "RawPredict": _unary(
            raw_predict,
            aiplatform_v1.RawPredictRequest.deserialize,
            httpbody_pb2.HttpBody.SerializeToString,
        ),
    }
    endpoints = {
        "GetEndpoint": _unary(
            lambda request: twin.get_endpoint(request.name),
            aiplatform_v1.GetEndpointRequest.deserialize,
            aiplatform_v1.Endpoint.serialize,
        )
    }
    return [
        grpc.method_handlers_generic_handler(
            "google.cloud.aiplatform.v1.PredictionService", prediction
        ),
        grpc.method_handlers_generic_handler(
            "google.cloud.aiplatform.v1.EndpointService", endpoints
        ),
    ]


# -- the process -----------------------------------------------------------------------------


class RunningTwin:
    """The twin serving on ``127.0.0.1:port`` (TLS; gRPC and REST by ALPN)."""

    def __init__(self, twin: EndpointTwin, port: int, tls: TlsFiles) -> None:
        self.tls = tls
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._grpc.add_generic_rpc_handlers(grpc_handlers(twin))
        grpc_port = self._grpc.add_insecure_port(f"{LOOPBACK}:0")
        self._rest: BaseWSGIServer = make_server(LOOPBACK, 0, rest_app(twin), threaded=True)
        self._rest_thread = threading.Thread(
            target=self._rest.serve_forever, name="vertex-rest", daemon=True
        )
        self._front = AlpnFront(
            LOOPBACK,
            port,
            tls,
            {"h2": (LOOPBACK, grpc_port), "http/1.1": (LOOPBACK, self._rest.server_port)},
        )

    @property
    def port(self) -> int:
        return self._front.port

    @property
    def api_endpoint(self) -> str:
        """What a client passes as ``client_options={"api_endpoint": ...}``."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> RunningTwin:
        self._grpc.start()
        self._rest_thread.start()
        self._front.start()
        return self

    def stop(self) -> None:
        self._front.stop()
        self._rest.shutdown()
        self._grpc.stop(grace=1).wait()


def serve(twin: EndpointTwin, port: int, tls: TlsFiles) -> RunningTwin:
    """Start serving (``port`` 0: a free one); ``stop()`` the result when done."""
    return RunningTwin(twin, port, tls).start()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    local = LocalCloudSettings().absolute()
    settings = local.runtime_settings()
    if not local.vertex_endpoint_port or not local.model_server_url:
        _log.error("CASCADE_LOCAL_VERTEX_ENDPOINT_PORT and _MODEL_SERVER_PORT must be set")
        return 2
    artifacts = ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)
    twin = EndpointTwin(
        project=settings.project,
        region=settings.region,
        model_server_url=local.model_server_url,
        serving_state=lambda dataset: read_serving_state(artifacts, dataset),
    )
    running = serve(twin, local.vertex_endpoint_port, local_certificates(local.vertex_tls_dir))
    _log.info("Vertex AI endpoint twin on %s", running.api_endpoint)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    stopping.wait()
    running.stop()
    logging.shutdown()
    os._exit(0)  # calls still waiting on the bucket or the model server end with us


if __name__ == "__main__":
    sys.exit(main())
