"""Cloud Storage's same-object mutation limit, in front of fake-gcs-server.

Cloud Storage sustains about one mutation per second of one object name: "a maximum
rate of writes to the same object name of one write per second"
(https://cloud.google.com/storage/quotas); beyond it a create, update or delete of that
name fails with HTTP 429, reason ``rateLimitExceeded`` and the message
``The object <bucket>/<name> exceeded the rate limit for object mutation operations
(create, update, and delete). Please reduce your request rate. See
https://cloud.google.com/storage/docs/gcs429.`` fake-gcs-server does not model it, so
the local cloud puts this front on the port every client reaches (STORAGE_EMULATOR_HOST)
and fake-gcs-server behind it on a private one.

The front forwards every request and response as it comes, bodies streamed (never held:
uploads of any size pass through), and answers 429 itself with Google's JSON error body
when a request would mutate an object name that was mutated less than ``1 / rate``
seconds before. Mutations, as Cloud Storage counts them: an upload (media, multipart,
the finishing request of a resumable one), a metadata update (PATCH/PUT), a delete, the
destination of a compose, copy or rewrite, and the XML API's PUT and DELETE. Reads,
lists and requests that fail (a 412 precondition, a 404) do not use the object's
allowance: a mutation reserves it when it starts and gives it back when it fails, so a
second mutation while the first is in flight is refused too. Each 429 is logged (one
warning line, ``429 rateLimitExceeded: <method> <bucket>/<name>``). It binds 127.0.0.1
only.

fake-gcs-server also ignores ``ifGenerationMatch`` on a copy or rewrite (it copies onto
an existing name regardless); Cloud Storage refuses such a copy with 412
``conditionNotMet``. The front checks a copy's destination precondition against the
stored generation first and answers Google's 412 itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cascade.localcloud.local_settings import LOOPBACK

__all__ = [
    "DEFAULT_WRITES_PER_S",
    "ObjectWriteLimit",
    "make_app",
    "mutated_object",
    "rate_limit_body",
]

DEFAULT_WRITES_PER_S = 1.0
"""Cloud Storage's sustained rate of mutations of one object name."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_MULTIPART_HEAD_LIMIT = 1024 * 1024
"""How much of a multipart upload is read to find its metadata part (the object name)."""
_UPLOAD_SESSIONS = 10_000
"""Resumable upload sessions remembered (upload id -> object name), oldest forgotten."""

_OBJECT_PATH = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)$")
_COMPOSE_PATH = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)/compose$")
_COPY_PATH = re.compile(
    r"^/storage/v1/b/[^/]+/o/[^/]+/(?:rewriteTo|copyTo)/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)$"
)
_UPLOAD_PATH = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")
_log = logging.getLogger("cascade.localcloud.gcs_front")
_CONTENT_RANGE = re.compile(r"^bytes (?:(?P<first>\d+)-(?P<last>\d+)|\*)/(?P<total>\d+|\*)$")


PRECONDITION_MESSAGE = "At least one of the pre-conditions you specified did not hold."


def precondition_body() -> dict[str, Any]:
    """Cloud Storage's JSON API error for a precondition that does not hold (412)."""
    return {
        "error": {
            "code": 412,
            "message": PRECONDITION_MESSAGE,
            "errors": [
                {
                    "message": PRECONDITION_MESSAGE,
                    "domain": "global",
                    "reason": "conditionNotMet",
                    "locationType": "header",
                    "location": "If-Match",
                }
            ],
        }
    }


def rate_limit_body(bucket: str, name: str) -> dict[str, Any]:
    """Cloud Storage's JSON API error for a too-frequent mutation of ``bucket/name``."""
    message = (
        f"The object {bucket}/{name} exceeded the rate limit for object mutation operations "
        "(create, update, and delete). Please reduce your request rate. "
        "See https://cloud.google.com/storage/docs/gcs429."
    )
    return {
        "error": {
            "code": 429,
            "message": message,
            "errors": [
                {"message": message, "domain": "usageLimits", "reason": "rateLimitExceeded"}
            ],
        }
    }


@dataclass(frozen=True)
class _Reservation:
    key: tuple[str, str]
    previous: float | None
    """When the name was last mutated before this reservation (None: not lately)."""


@dataclass
class ObjectWriteLimit:
    """The last mutation of each object name; ``writes_per_s`` of one name at most."""

    writes_per_s: float = DEFAULT_WRITES_PER_S
    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def interval_s(self) -> float:
        return 1.0 / self.writes_per_s

    def reserve(self, key: tuple[str, str]) -> _Reservation | None:
        """Take the name's allowance for a mutation starting now; None when it is spent.
        ``release`` the reservation if the mutation fails."""
        now = self.clock()
        with self._lock:
            previous = self._last.get(key)
            if previous is not None and now - previous < self.interval_s:
                return None
            self._last[key] = now
            if len(self._last) > 4096:
                self._forget_older_than(now - self.interval_s)
            return _Reservation(key, previous)

    def release(self, reservation: _Reservation) -> None:
        """A reserved mutation failed: it did not mutate, the name's allowance is back."""
        with self._lock:
            if reservation.previous is None:
                self._last.pop(reservation.key, None)
            else:
                self._last[reservation.key] = reservation.previous

    def _forget_older_than(self, horizon: float) -> None:
        for key in [key for key, at in self._last.items() if at < horizon]:
            del self._last[key]


def mutated_object(
    method: str, raw_path: str, query: dict[str, list[str]]
) -> tuple[str, str] | None:
    """The ``(bucket, object name)`` a request mutates, known from its method, path and
    query alone; None for a read, or an upload whose name is in its body or session."""
    method = method.upper()
    if raw_path.startswith("/storage/v1/"):
        if method == "POST":
            found = _COMPOSE_PATH.match(raw_path) or _COPY_PATH.match(raw_path)
        elif method in ("PATCH", "PUT", "DELETE"):
            found = _OBJECT_PATH.match(raw_path)
        else:
            found = None
        return None if found is None else (unquote(found["bucket"]), unquote(found["name"]))
    if raw_path.startswith("/upload/"):
        found = _UPLOAD_PATH.match(raw_path)
        names = query.get("name")
        simple = query.get("uploadType", ["media"])[0] != "resumable" and "upload_id" not in query
        if method == "POST" and found is not None and names and simple:
            return unquote(found["bucket"]), names[0]
        return None
    if raw_path.startswith(("/batch/", "/download/", "/_internal/")):
        return None
    if method in ("PUT", "DELETE"):  # the XML API: /<bucket>/<object>
        bucket, _, name = raw_path.lstrip("/").partition("/")
        if bucket and name:
            return unquote(bucket), unquote(name)
    return None


def _multipart_name(content_type: str, head: bytes) -> str | None:
    """The object name in a multipart upload's metadata (its first part), if ``head``
    holds that part whole."""
    boundary_match = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary_match is None:
        return None
    boundary = b"--" + boundary_match.group(1).encode()
    start = head.find(boundary)
    if start < 0:
        return None
    end = head.find(boundary, start + len(boundary))
    if end < 0:
        return None
    part = head[start + len(boundary) : end]
    _, _, body = part.partition(b"\r\n\r\n")
    return _json_name(body.strip())


def _finishes_upload(content_range: str | None) -> bool:
    """Whether a resumable upload's PUT carries its last bytes (or asks its state)."""
    if content_range is None:
        return True
    found = _CONTENT_RANGE.match(content_range.strip())
    if found is None:
        return True
    if found["total"] == "*":
        return False
    if found["last"] is None:  # "bytes */total": finalises an upload already sent whole
        return True
    return int(found["last"]) + 1 == int(found["total"])


class _Sessions:
    """Resumable upload sessions: upload id -> (bucket, object name)."""

    def __init__(self) -> None:
        self._names: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, upload_id: str, key: tuple[str, str]) -> None:
        with self._lock:
            self._names[upload_id] = key
            while len(self._names) > _UPLOAD_SESSIONS:
                self._names.popitem(last=False)

    def name(self, upload_id: str) -> tuple[str, str] | None:
        with self._lock:
            return self._names.get(upload_id)


def _forwarded_headers(headers: Any) -> list[tuple[str, str]]:
    return [(key, value) for key, value in headers.items() if key.lower() not in _HOP_BY_HOP]


def make_app(backend: str, limit: ObjectWriteLimit) -> Callable[..., Any]:
    """The front, as an ASGI application forwarding to ``backend`` (fake-gcs-server)."""
    client = httpx.AsyncClient(
        base_url=backend,
        timeout=httpx.Timeout(None, connect=10.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )
    sessions = _Sessions()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        raw_path = raw_path.split("?", 1)[0]
        query_string = scope.get("query_string", b"").decode("latin-1")
        query = parse_qs(query_string)
        method = request.method
        key = mutated_object(method, raw_path, query)
        body: AsyncIterator[bytes] = request.stream()
        upload_type = query.get("uploadType", [""])[0]
        is_upload_post = method == "POST" and _UPLOAD_PATH.match(raw_path) is not None
        resumable_start = is_upload_post and upload_type == "resumable" and "upload_id" not in query
        if is_upload_post and key is None and upload_type == "multipart":
            content_type = request.headers.get("content-type", "")
            head, body = await _peek(body, lambda head: _multipart_name(content_type, head))
            name = _multipart_name(content_type, head)
            found = _UPLOAD_PATH.match(raw_path)
            if name is not None and found is not None:
                key = (unquote(found["bucket"]), name)
        session_name: str | None = None
        if resumable_start and "name" not in query:  # the name is in the JSON body
            head, body = await _peek(body, lambda _head: False)
            session_name = _json_name(head)
        finishing = _finishes_upload(request.headers.get("content-range"))
        if method == "PUT" and "upload_id" in query and _UPLOAD_PATH.match(raw_path) and finishing:
            key = sessions.name(query["upload_id"][0])
        copied = _COPY_PATH.match(raw_path) if method == "POST" else None
        wanted = query.get("ifGenerationMatch")
        if copied is not None and wanted and not await _generation_is(client, copied, wanted[0]):
            await _drain(body)
            refusal = Response(
                json.dumps(precondition_body()),
                status_code=412,
                media_type="application/json; charset=UTF-8",
            )
            await refusal(scope, receive, send)
            return
        reservation: _Reservation | None = None
        if key is not None:
            reservation = limit.reserve(key)
            if reservation is None:
                _log.warning("429 rateLimitExceeded: %s %s/%s", method, *key)
                await _drain(body)
                response: Response = Response(
                    json.dumps(rate_limit_body(*key)),
                    status_code=429,
                    media_type="application/json; charset=UTF-8",
                )
                await response(scope, receive, send)
                return
        has_body = method not in ("GET", "HEAD", "DELETE", "OPTIONS")
        upstream_request = client.build_request(
            method,
            raw_path + (f"?{query_string}" if query_string else ""),
            headers=_forwarded_headers(request.headers),
            content=body if has_body else None,
        )
        try:
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError:
            if reservation is not None:
                limit.release(reservation)
            await Response("fake-gcs-server unreachable", status_code=503)(scope, receive, send)
            return
        if reservation is not None and not 200 <= upstream.status_code < 300:
            limit.release(reservation)
        if resumable_start and upstream.status_code < 300:
            location = upstream.headers.get("location")
            _remember_session(sessions, raw_path, query, location, session_name)
        streamed = StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=dict(_forwarded_headers(upstream.headers)),
            background=BackgroundTask(upstream.aclose),
        )
        await streamed(scope, receive, send)

    return app


async def _generation_is(client: httpx.AsyncClient, copied: re.Match[str], wanted: str) -> bool:
    """Whether a copy's destination is at generation ``wanted`` (0: it does not exist)."""
    path = f"/storage/v1/b/{copied['bucket']}/o/{copied['name']}"
    found = await client.get(path, params={"fields": "generation"})
    if found.status_code == 404:
        return wanted == "0"
    if found.status_code != 200:
        return True  # let the backend answer whatever it answers
    return str(found.json().get("generation")) == wanted


def _remember_session(
    sessions: _Sessions,
    raw_path: str,
    query: dict[str, list[str]],
    location: str | None,
    body_name: str | None,
) -> None:
    found = _UPLOAD_PATH.match(raw_path)
    if location is None or found is None:
        return
    located = parse_qs(urlsplit(location).query)
    upload_ids = located.get("upload_id")
    names = query.get("name") or located.get("name") or []
    name = body_name or (names[0] if names else None)
    if upload_ids and name:
        sessions.remember(upload_ids[0], (unquote(found["bucket"]), name))


def _json_name(body: bytes) -> str | None:
    """The ``name`` of a resumable upload's JSON metadata."""
    try:
        metadata = json.loads(body or b"{}")
    except ValueError:
        return None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


async def _peek(
    stream: AsyncIterator[bytes], enough: Callable[[bytes], object]
) -> tuple[bytes, AsyncIterator[bytes]]:
    """The first chunks of ``stream`` (until ``enough`` of them, at most
    ``_MULTIPART_HEAD_LIMIT`` bytes), and the whole stream again."""
    head = b""
    exhausted = False
    while len(head) < _MULTIPART_HEAD_LIMIT:
        try:
            head += await stream.__anext__()
        except StopAsyncIteration:
            exhausted = True
            break
        if enough(head):
            break

    async def whole() -> AsyncIterator[bytes]:
        if head:
            yield head
        if not exhausted:
            async for chunk in stream:
                yield chunk

    return head, whole()


async def _drain(body: AsyncIterator[bytes]) -> None:
    async for _ in body:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="fake-gcs-server's URL")
    parser.add_argument("--writes-per-s", type=float, default=DEFAULT_WRITES_PER_S)
    args = parser.parse_args(argv)
    if args.writes_per_s <= 0:
        parser.error("--writes-per-s must be above 0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    app = make_app(args.backend, ObjectWriteLimit(args.writes_per_s))
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
