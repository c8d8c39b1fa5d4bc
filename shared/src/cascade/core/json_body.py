"""The guard every HTTP control surface puts in front of its JSON body.

``train-http`` and ``evaluate-http`` take small JSON objects from people and CI. Before
any model sees a body it must pass, in this order (the first failure answers):

- the method is ``POST`` (else 405);
- the ``Content-Type`` is ``application/json`` (charset utf-8 when one is named; else 415);
- the body is at most ``MAX_CONTROL_BODY_BYTES`` (64 KiB; else 413). Cloud Functions
  accepts up to 32 MB on an HTTP function; a control request needs well under 1 KiB, so
  ours is stricter by design: nothing large is ever parsed, kept or logged. The body is
  kept at most one byte past the limit, whatever ``Content-Length`` claims (a chunked
  body has none); the rest of a refused body is read and dropped, up to 32 MB, so the
  client reads the 413 rather than a reset connection;
- it nests arrays/objects at most ``MAX_CONTROL_DEPTH`` deep (checked on the bytes,
  before parsing, so a 10,000-deep body never reaches the recursive parser; else 400);
- it is valid UTF-8 JSON with standard numbers only (no ``NaN``/``Infinity``; else 400);
- its top level is an object (else 400).

Every refusal is a ``BodyError`` carrying the HTTP status and a message naming the
problem; the guard raises nothing else for any body. The model server keeps its own,
looser limits (Vertex AI's 1.5 MB prediction body) in ``cascade.serving.request_rules``;
``depth_exceeds`` here is the same scan.
"""

from __future__ import annotations

import json
from typing import IO, Any, Protocol

from cascade.core.errors import BadRequestError

__all__ = [
    "MAX_CONTROL_BODY_BYTES",
    "MAX_CONTROL_DEPTH",
    "BodyError",
    "JsonRequest",
    "depth_exceeds",
    "parse_json_object",
    "read_json_object",
]

MAX_CONTROL_BODY_BYTES = 64 * 1024
"""64 KiB: the most a control request's body may have (Cloud Functions allows 32 MB)."""
MAX_CONTROL_DEPTH = 8
"""Deepest nesting of arrays and objects (a train request needs 2: body, hyperparameters)."""
DRAIN_LIMIT_BYTES = 32 * 1024 * 1024
"""The most of a refused body read (and dropped): Cloud Functions' own 32 MB limit."""


class BodyError(BadRequestError):
    """The body is refused before it is parsed into a request; ``status`` is the HTTP one."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class JsonRequest(Protocol):
    """What the guard reads of an HTTP request (``flask.Request`` has it)."""

    @property
    def method(self) -> str: ...

    @property
    def mimetype(self) -> str: ...

    @property
    def mimetype_params(self) -> dict[str, str]: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def stream(self) -> IO[bytes]: ...


def depth_exceeds(data: bytes, limit: int) -> bool:
    """True when arrays/objects nest deeper than ``limit`` (strings are skipped)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # cannot nest deeper than the brackets it has
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(
    data: bytes,
    *,
    max_bytes: int = MAX_CONTROL_BODY_BYTES,
    max_depth: int = MAX_CONTROL_DEPTH,
    shape: str = "{...}",
) -> dict[str, Any]:
    """``data`` as a JSON object, after the size, depth and syntax rules."""
    if len(data) > max_bytes:
        raise BodyError(f"the body is larger than the limit of {max_bytes} bytes", status=413)
    if depth_exceeds(data, max_depth):
        raise BodyError(f"the body nests arrays/objects deeper than {max_depth} levels")
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as error:
        raise BodyError(f"the body is not UTF-8: {error.reason} at byte {error.start}") from None
    except (ValueError, RecursionError) as error:
        raise BodyError(f"the body is not valid JSON: {error}") from None
    if type(body) is not dict:
        raise BodyError(f"the body must be a JSON object {shape}")
    return body


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream`` (a read may return fewer than asked)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _discard(stream: IO[bytes]) -> None:
    """Read and drop what is left of a refused body, up to ``DRAIN_LIMIT_BYTES``, so the
    client, still sending, reads the refusal instead of a reset connection."""
    left = DRAIN_LIMIT_BYTES
    while left > 0:
        chunk = stream.read(min(left, 64 * 1024))
        if not chunk:
            return
        left -= len(chunk)


def read_json_object(
    request: JsonRequest,
    *,
    max_bytes: int = MAX_CONTROL_BODY_BYTES,
    max_depth: int = MAX_CONTROL_DEPTH,
    shape: str = "{...}",
) -> dict[str, Any]:
    """The request's body as a JSON object; ``BodyError`` with the status otherwise."""
    if request.method != "POST":
        raise BodyError(f"use POST with a JSON body {shape}", status=405)
    if request.mimetype != "application/json":
        shown = request.mimetype or "none"
        raise BodyError(f"the Content-Type must be application/json, not {shown[:100]}", status=415)
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BodyError(f"the body must be UTF-8, not charset {charset[:40]}", status=415)
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        _discard(request.stream)
        raise BodyError(f"the body is larger than the limit of {max_bytes} bytes", status=413)
    data = _read_at_most(request.stream, max_bytes + 1)
    if len(data) > max_bytes:
        _discard(request.stream)
    return parse_json_object(data, max_bytes=max_bytes, max_depth=max_depth, shape=shape)
