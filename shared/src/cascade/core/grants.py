"""Who a process is and what it may do: the topology's grants, enforced locally.

On Google Cloud each function runs as its own service account with exactly the roles
its topology entry declares (``access``; infra/iam.tf derives them), and Google refuses
anything else. The local cloud gives each process it starts the same identity through
``CASCADE_LOCAL_IDENTITY`` (a ``LocalIdentity`` as JSON, set by the process spec, never
by a request), and ``cascade.core.clients`` enforces it at the transport seam below
every Cascade call, refusing with the error Google returns:

- Pub/Sub (gRPC): ``PERMISSION_DENIED`` "User not authorized to perform this action.",
  which the client raises as ``google.api_core.exceptions.PermissionDenied`` (403);
- Cloud Storage (JSON API): HTTP 403 with Google's error body, "<principal> does not have
  storage.objects.create access to the Google Cloud Storage object. Permission
  'storage.objects.create' denied on resource (or it may not exist).", which the client
  raises as ``google.api_core.exceptions.Forbidden``;
- BigQuery (REST): HTTP 403 "Access Denied: ..." (``cascade.core.bigquery_grants``);
  its Storage Read API (gRPC): ``PERMISSION_DENIED`` "request failed: the user does not
  have '<permission>' permission for '<resource>'" (the same module).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
import requests
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from cascade.core.settings import Settings
    from cascade.core.topology import Access, Topology

__all__ = [
    "CONSOLE_ACCOUNT",
    "IDENTITY_ENV",
    "INVOKER_ACCOUNT",
    "JOBS_IDENTITY_ENV",
    "PUBSUB_DENIED_MESSAGE",
    "GrpcGuard",
    "GrpcPermissionDenied",
    "LocalIdentity",
    "UnaryGuard",
    "console_identity",
    "forbidden_response",
    "guard_channel",
    "guard_session",
    "identity_for",
    "service_account_email",
    "storage_denial",
    "storage_permission",
]

IDENTITY_ENV = "CASCADE_LOCAL_IDENTITY"
JOBS_IDENTITY_ENV = "CASCADE_LOCAL_JOBS_IDENTITY"  # the job service hands it to trainers
PUBSUB_DENIED_MESSAGE = "User not authorized to perform this action."
_PUBLISH = "/google.pubsub.v1.Publisher/Publish"
_JOB_USER = "roles/bigquery.jobUser"
_READ_SESSION_USER = "roles/bigquery.readSessionUser"


class LocalIdentity(BaseModel):
    """A principal and its grants, with real names (topic paths, bucket names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principal: str  # the service account email
    name: str  # the function (or service account) of the topology
    publish: frozenset[str] = frozenset()  # projects/<p>/topics/<id>
    read: frozenset[str] = frozenset()  # buckets: objects get, list
    write: frozenset[str] = frozenset()  # buckets: objects get, list, create, update, delete
    create: frozenset[str] = frozenset()  # buckets: objects create (new names only)
    tables_read: frozenset[str] = frozenset()  # BigQuery dataset ids: dataViewer
    tables_write: frozenset[str] = frozenset()  # BigQuery dataset ids: dataEditor
    bigquery_jobs: bool = False  # roles/bigquery.jobUser on the project: run queries, loads
    # roles/bigquery.readSessionUser on the project: Storage Read API sessions
    bigquery_read_sessions: bool = False

    def may(self, permission: str, bucket: str) -> bool:
        if permission in ("storage.objects.get", "storage.objects.list"):
            return bucket in self.read or bucket in self.write
        if permission in (
            "storage.objects.create",
            "storage.objects.update",
            "storage.objects.delete",
        ):
            return bucket in self.write or (
                permission == "storage.objects.create" and bucket in self.create
            )
        return False  # bucket administration: no function holds it

    def to_env(self) -> str:
        return self.model_dump_json()


INVOKER_ACCOUNT = "invoker"
"""The account Eventarc triggers and Pub/Sub push subscriptions call event functions as
(infra/iam.tf ``google_service_account.invoker``): their only invoker."""


def service_account_email(name: str, settings: Settings) -> str:
    """The account Terraform creates for ``name``: ``<name_prefix><name>@<project>...``
    (Terraform's name_prefix is CASCADE_TOPIC_PREFIX)."""
    return f"{settings.topic_prefix}{name}@{settings.project}.iam.gserviceaccount.com"


def identity_for(topology: Topology, name: str, settings: Settings) -> LocalIdentity:
    """The identity of function or service account ``name`` of ``topology``."""
    return _identity(topology, name, topology.identities()[name], settings)


CONSOLE_ACCOUNT = "console"
"""The web console's service account (infra/console.tf: ``<name_prefix>console``)."""


def console_identity(topology: Topology, settings: Settings) -> LocalIdentity:
    """The web console's identity: ``Topology.console_access``, as Terraform grants it."""
    return _identity(topology, CONSOLE_ACCOUNT, topology.console_access(), settings)


def _identity(topology: Topology, name: str, access: Access, settings: Settings) -> LocalIdentity:
    return LocalIdentity(
        principal=service_account_email(name, settings),
        name=name,
        publish=frozenset(settings.topic_path(topic) for topic in access.publish),
        read=frozenset(settings.bucket_for(bucket) for bucket in access.read),
        write=frozenset(settings.bucket_for(bucket) for bucket in access.write),
        create=frozenset(settings.bucket_for(bucket) for bucket in access.create),
        tables_read=frozenset(settings.warehouse_dataset(name) for name in access.tables_read),
        tables_write=frozenset(settings.warehouse_dataset(name) for name in access.tables_write),
        bigquery_jobs=any(
            _JOB_USER in topology.apis[api].roles for api in access.apis if api in topology.apis
        ),
        bigquery_read_sessions=any(
            _READ_SESSION_USER in topology.apis[api].roles
            for api in access.apis
            if api in topology.apis
        ),
    )


# ---------------------------------------------------------------------- Pub/Sub (gRPC)


class _PermissionDenied(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A PERMISSION_DENIED status, raised where the server's would surface (grpc hands
    an interceptor's RpcError back as the call's failed outcome, hence the Future)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.PERMISSION_DENIED

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> None:
        return None

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> _PermissionDenied:
        return self

    def traceback(self, timeout: float | None = None) -> None:
        return None

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)


GrpcPermissionDenied = _PermissionDenied
"""What an interceptor raises to refuse a gRPC call as the server would (BigQuery's
Storage Read API guard in ``cascade.core.bigquery_grants`` too)."""


class UnaryGuard(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """A client interceptor that checks each unary-request call (``_check`` raises
    ``GrpcPermissionDenied`` to refuse it) before it is sent, as one identity."""

    def __init__(self, identity: LocalIdentity) -> None:
        self._identity = identity

    def _check(self, method: str, request: Any) -> None:
        raise NotImplementedError

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        self._check(client_call_details.method, request)
        return continuation(client_call_details, request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        self._check(client_call_details.method, request)
        return continuation(client_call_details, request)


class GrpcGuard(UnaryGuard):
    """Refuses every Pub/Sub call the identity holds no role for: it may publish to its
    topics (roles/pubsub.publisher has pubsub.topics.publish only), nothing else."""

    def _check(self, method: str, request: Any) -> None:
        topic = str(getattr(request, "topic", "") or "")
        if method == _PUBLISH and topic in self._identity.publish:
            return
        permission = "pubsub.topics.publish" if method == _PUBLISH else method
        resource = topic or str(
            getattr(request, "subscription", "") or getattr(request, "name", "")
        )
        raise _PermissionDenied(
            f"{PUBSUB_DENIED_MESSAGE} (local cloud: {self._identity.principal}, the "
            f"identity of {self._identity.name}, lacks {permission} on {resource}; "
            "grant it in infra/topology.yaml)"
        )


class _StreamGuard(grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Streaming pulls need roles/pubsub.subscriber, which no identity here holds."""

    def __init__(self, identity: LocalIdentity) -> None:
        self._identity = identity

    def _deny(self, method: str) -> _PermissionDenied:
        return _PermissionDenied(
            f"{PUBSUB_DENIED_MESSAGE} (local cloud: {self._identity.principal}, the "
            f"identity of {self._identity.name}, lacks {method})"
        )

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        raise self._deny(client_call_details.method)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        raise self._deny(client_call_details.method)


def guard_channel(channel: grpc.Channel, identity: LocalIdentity) -> grpc.Channel:
    """``channel`` with every call checked against ``identity``'s grants."""
    return grpc.intercept_channel(channel, GrpcGuard(identity), _StreamGuard(identity))


# ---------------------------------------------------------------------- Cloud Storage

_API_PREFIXES = ("/upload/storage/v1/", "/download/storage/v1/", "/storage/v1/")
_WRITES = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}


def storage_permission(method: str, url: str) -> list[tuple[str, str, str]]:
    """What a JSON API request needs: [(permission, bucket, "object" | "bucket")].

    Unknown shapes need ``storage.buckets.<verb>`` on their bucket, which no function
    holds: the guard refuses what it does not understand.
    """
    path = urlsplit(url).path
    for prefix in _API_PREFIXES:
        if path.startswith(prefix):
            upload = prefix.startswith("/upload")
            parts = [unquote(part) for part in path[len(prefix) :].split("/")]
            break
    else:
        return [("storage.buckets.get", "", "bucket")]
    method = method.upper()
    if len(parts) < 2 or parts[0] != "b":
        return [("storage.buckets.list", "", "bucket")]
    bucket = parts[1]
    rest = parts[2:]
    if not rest:
        verb = "get" if method == "GET" else _WRITES.get(method, "update")
        return [(f"storage.buckets.{verb}", bucket, "bucket")]
    if rest[0] != "o":
        return [("storage.buckets.update", bucket, "bucket")]
    if len(rest) == 1:  # the objects collection: list, or upload
        if method == "GET" and not upload:
            return [("storage.objects.list", bucket, "bucket")]
        return [("storage.objects.create", bucket, "object")]
    if upload:  # a resumable upload's session
        return [("storage.objects.create", bucket, "object")]
    if len(rest) >= 3 and rest[2] == "compose":
        return [
            ("storage.objects.get", bucket, "object"),
            ("storage.objects.create", bucket, "object"),
        ]
    if len(rest) >= 5 and rest[2] in ("rewriteTo", "copyTo") and rest[3] == "b":
        return [
            ("storage.objects.get", bucket, "object"),
            ("storage.objects.create", rest[4], "object"),
        ]
    if len(rest) > 2:
        return [("storage.buckets.update", bucket, "bucket")]
    if method == "GET":
        return [("storage.objects.get", bucket, "object")]
    return [(f"storage.objects.{_WRITES.get(method, 'update')}", bucket, "object")]


def storage_denial(identity: LocalIdentity, method: str, url: str) -> tuple[str, str, str] | None:
    """The first permission the request needs and ``identity`` lacks, or None.

    Overwriting an object needs ``storage.objects.delete`` besides ``create``, which a
    create-only grant (objectCreator) lacks. The guard cannot tell a new name from an
    existing one without asking, so it holds a create-only identity to create-only
    writes: ``ifGenerationMatch=0``, which Cloud Storage itself refuses (412) for a name
    that exists. A create without it is refused as the overwrite it may be: stricter
    than Google for a new name, never more lenient.
    """
    for permission, bucket, noun in storage_permission(method, url):
        if not identity.may(permission, bucket):
            return permission, bucket, noun
        if (
            permission == "storage.objects.create"
            and bucket not in identity.write
            and not _create_only(url)
        ):
            return "storage.objects.delete", bucket, noun
    return None


def _create_only(url: str) -> bool:
    """The request carries Cloud Storage's create-only precondition."""
    return "0" in parse_qs(urlsplit(url).query).get("ifGenerationMatch", [])


def _forbidden(
    identity: LocalIdentity, method: str, url: str, permission: str, noun: str
) -> requests.Response:
    message = (
        f"{identity.principal} does not have {permission} access to the Google Cloud "
        f"Storage {noun}. Permission '{permission}' denied on resource (or it may not exist)."
    )
    return forbidden_response(method, url, message, reason="forbidden")


def forbidden_response(
    method: str, url: str, message: str, *, reason: str, status: str | None = None
) -> requests.Response:
    """A Google JSON API's 403 (``error.code``, ``message``, ``errors[].reason``, and
    ``status`` where the API sends one), as the client library parses it."""
    error: dict[str, Any] = {
        "code": 403,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
    }
    if status is not None:
        error["status"] = status
    response = requests.Response()
    response.status_code = 403
    response.reason = "Forbidden"
    response.url = url
    response.headers["Content-Type"] = "application/json; charset=UTF-8"
    response._content = json.dumps({"error": error}).encode()
    response.request = requests.Request(method, url).prepare()
    return response


def guard_session(session: requests.Session, identity: LocalIdentity) -> requests.Session:
    """``session`` answering 403, as Cloud Storage does, for what ``identity`` lacks."""
    send = session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        denied = storage_denial(identity, method, url)
        if denied is not None:
            permission, _, noun = denied
            return _forbidden(identity, method, url, permission, noun)
        return send(method, url, *args, **kwargs)

    session.request = request  # type: ignore[method-assign, assignment]
    return session
