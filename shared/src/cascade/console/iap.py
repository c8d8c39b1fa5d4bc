"""The signed-in caller on Cloud Run: IAP's signed header, verified.

IAP (enabled on the console's Cloud Run service, ``infra/console.tf``) signs every request
it lets through with an ES256 JWT in ``x-goog-iap-jwt-assertion``. Verifying it is what
Google's "Securing your app with signed headers" asks of every app: it still holds if IAP
were turned off or bypassed. Its unsigned companions (``x-goog-authenticated-user-email``)
are never read: anyone who reaches the container can set them.

The check is Google's sample's (``google.auth.jwt.decode`` against IAP's published keys,
``aud`` the service's audience) plus what that sample leaves to the app: the algorithm
must be ES256, the issuer ``https://cloud.google.com/iap``, the email a real one. The
keys are fetched once and again only when an assertion names a key not yet seen (at most
once a minute, so random key ids cannot make the console hammer gstatic.com).

A missing, malformed, forged, expired or foreign assertion is a 401 page, never a 5xx;
IAP's keys that cannot be fetched are a 503 (nothing the caller did).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping

from google.auth import exceptions as auth_exceptions
from google.auth import jwt
from google.auth.transport import Request as AuthRequest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cascade.console.actions import ALL_ROLES, Caller, RoleRequiredError
from cascade.console.roles import ROLE_VARIABLES, Identity, Role, RoleMembers, role_of_action

__all__ = [
    "IAP_ASSERTION_HEADER",
    "IAP_ISSUER",
    "IAP_KEYS_URL",
    "IapCallers",
    "IapGate",
    "IapKeys",
    "IapVerifier",
]

IAP_ASSERTION_HEADER = "x-goog-iap-jwt-assertion"
IAP_ISSUER = "https://cloud.google.com/iap"
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"
"""``{key id: PEM public key}``: what Google's Python sample verifies against."""
IAP_ALGORITHM = "ES256"
MAX_ASSERTION_CHARS = 4096
"""IAP's assertions are under 1.5 KB; anything far larger is refused before parsing."""
MAX_EMAIL_CHARS = 200
CLOCK_SKEW_S = 30
KEYS_MAX_AGE_S = 3600.0
KEYS_REFETCH_AFTER_S = 60.0
KEYS_TIMEOUT_S = 10.0


def _unauthenticated(why: str) -> HTTPException:
    return HTTPException(401, f"sign in through IAP: {why}")


class IapKeys:
    """IAP's public keys by key id, fetched with ``request`` (a google-auth transport)."""

    def __init__(
        self,
        request: AuthRequest,
        clock: Callable[[], float] = time.monotonic,
        url: str = IAP_KEYS_URL,
    ) -> None:
        self._request = request
        self._clock = clock
        self._url = url
        self._keys: dict[str, str] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def key(self, key_id: str) -> str | None:
        """The PEM key ``key_id`` names; None when IAP publishes no such key."""
        with self._lock:
            if self._stale(key_id):
                self._keys = self._fetch()
                self._fetched_at = self._clock()
            return self._keys.get(key_id)

    def _stale(self, key_id: str) -> bool:
        if self._fetched_at is None:
            return True
        age = self._clock() - self._fetched_at
        return age > KEYS_MAX_AGE_S or (key_id not in self._keys and age > KEYS_REFETCH_AFTER_S)

    def _fetch(self) -> dict[str, str]:
        try:
            response = self._request(self._url, method="GET", timeout=KEYS_TIMEOUT_S)
        except auth_exceptions.TransportError as error:
            raise HTTPException(503, f"IAP's public keys could not be fetched: {error}") from None
        if response.status != 200:
            raise HTTPException(503, f"IAP's public keys answered HTTP {response.status}")
        try:
            keys = json.loads(response.data)
        except (ValueError, UnicodeDecodeError):
            keys = None
        if not isinstance(keys, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
        ):
            raise HTTPException(503, "IAP's public keys are not a {key id: PEM key} object")
        return keys


class IapVerifier:
    """Verifies IAP assertions meant for ``audience`` (the service's: ``/projects/
    <project number>/locations/<region>/services/<service>``)."""

    def __init__(self, audience: str, keys: IapKeys, clock_skew_s: int = CLOCK_SKEW_S) -> None:
        self._audience = audience
        self._keys = keys
        self._clock_skew_s = clock_skew_s

    def identity(self, assertion: str | None) -> Identity:
        """The verified caller of ``assertion``; HTTPException 401 otherwise."""
        if not assertion:
            raise _unauthenticated(f"the request carries no {IAP_ASSERTION_HEADER} header")
        if len(assertion) > MAX_ASSERTION_CHARS:
            raise _unauthenticated("the IAP assertion is too long")
        key_id = self._key_id(assertion)
        key = self._keys.key(key_id)
        if key is None:
            raise _unauthenticated("the IAP assertion names a key IAP does not publish")
        try:
            claims = jwt.decode(  # type: ignore[no-untyped-call]
                assertion,
                certs={key_id: key},
                audience=self._audience,
                clock_skew_in_seconds=self._clock_skew_s,
            )
        except (auth_exceptions.GoogleAuthError, ValueError, TypeError) as error:
            raise _unauthenticated(f"the IAP assertion is not valid ({error})") from None
        return _identity_of(claims)

    @staticmethod
    def _key_id(assertion: str) -> str:
        try:
            header = jwt.decode_header(assertion)  # type: ignore[no-untyped-call]
        except (auth_exceptions.GoogleAuthError, ValueError, TypeError):
            raise _unauthenticated("the IAP assertion is not a JWT") from None
        if header.get("alg") != IAP_ALGORITHM:
            raise _unauthenticated(f"the IAP assertion is not signed with {IAP_ALGORITHM}")
        key_id = header.get("kid")
        if not isinstance(key_id, str) or not key_id or len(key_id) > 200:
            raise _unauthenticated("the IAP assertion names no key")
        return key_id


def _identity_of(claims: Mapping[str, object]) -> Identity:
    if claims.get("iss") != IAP_ISSUER:
        raise _unauthenticated("the assertion was not issued by IAP")
    email = claims.get("email")
    if (
        not isinstance(email, str)
        or not 3 <= len(email) <= MAX_EMAIL_CHARS
        or "@" not in email
        or not email.isprintable()
        or any(c.isspace() for c in email)
    ):
        raise _unauthenticated("the IAP assertion carries no email")
    domain = claims.get("hd")
    return Identity(email=email, hosted_domain=domain if isinstance(domain, str) else None)


class IapCallers:
    """``ConsoleConfig.caller_of`` on Cloud Run: the verified IAP caller, with the roles
    ``members`` give it. An action (any method but GET and HEAD) is refused here, before
    its handler runs, unless the caller holds the role its route needs
    (``cascade.console.roles.role_of_action``); a route the table does not name needs
    every role."""

    def __init__(self, verifier: IapVerifier, members: RoleMembers) -> None:
        self._verifier = verifier
        self._members = members

    def __call__(self, request: Request) -> Caller:
        identity = self._verifier.identity(request.headers.get(IAP_ASSERTION_HEADER))
        caller = Caller(identity.email, roles=self._members.roles_of(identity))
        if request.method not in ("GET", "HEAD"):
            self._authorize(caller, role_of_action(request.url.path))
        return caller

    def _authorize(self, caller: Caller, role: Role | None) -> None:
        if role is None:
            if caller.roles != ALL_ROLES:
                raise HTTPException(403, "this action is not in the console's role table")
            return
        if role in caller.roles:
            return
        message = (
            f"this action needs the {role.value} role: {caller.name} is not listed in the "
            f"Terraform variable {ROLE_VARIABLES[role]}"
        )
        groups = self._members.groups_of(role)
        if groups:
            message += (
                f" (its groups, {', '.join(groups)}, let you open the console but do not "
                "count here: the console cannot expand groups; list user:"
                f"{caller.name} instead)"
            )
        raise RoleRequiredError(role, caller.name, message)


class IapGate:
    """ASGI middleware: every HTTP request needs a valid IAP assertion (pages too, not
    only actions); anything else is answered 401 (503 when IAP's keys are out of reach)
    before the console sees it."""

    def __init__(self, app: ASGIApp, verifier: IapVerifier) -> None:
        self.app = app
        self._verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        assertion = Headers(scope=scope).get(IAP_ASSERTION_HEADER)
        try:
            await run_in_threadpool(self._verifier.identity, assertion)
        except HTTPException as error:
            response = PlainTextResponse(str(error.detail), status_code=error.status_code)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
