"""The console's request hygiene: security headers on every answer and CSRF tokens.

CSRF: a per-browser-session random token lives in a ``SameSite=Strict``, HttpOnly cookie;
every form carries it in a hidden field (or a script sends it in ``X-CSRF-Token``).
A POST whose field does not equal its cookie (compared in constant time), or that comes
from another origin, is refused with 403 before anything runs.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SecurityHeaders",
    "csrf_token_of",
    "csrf_valid",
    "new_csrf_token",
]

CSRF_COOKIE = "cascade_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""Scripts only from the console's own static files: no inline script, no ``eval``.
Inline styles stay allowed because the run report embeds its CSS and SVG charts."""

_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token_of(request: Request) -> str | None:
    """The session's token from its cookie, if it has a well-formed one."""
    token = request.cookies.get(CSRF_COOKIE)
    if token is None or not 32 <= len(token) <= 64:
        return None
    return token


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def csrf_valid(request: Request, submitted: str | None) -> bool:
    """Whether a POST carries its session's token (form field or header) and comes
    from this origin (browsers send ``Origin`` on every cross-site POST)."""
    cookie = csrf_token_of(request)
    offered = submitted if submitted is not None else request.headers.get(CSRF_HEADER)
    if cookie is None or offered is None or not _same_origin(request):
        return False
    return hmac.compare_digest(cookie.encode(), offered.encode())
