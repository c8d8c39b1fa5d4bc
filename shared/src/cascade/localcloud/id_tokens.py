"""ID tokens of the local cloud, and Cloud Run's check of them in front of HTTP functions.

On Google Cloud an HTTP function has no public invoker: Cloud Run admits a request only
with ``Authorization: Bearer <ID token>``, a JWT Google signed whose ``aud`` is the
function's URL, for a principal holding the invoker role (Terraform grants it from the
function's topology ``invokers`` group: ``train_http_invokers`` and the others). The
local cloud does the same with its own issuer: an RSA key in its state folder signs
tokens (``cascade id-token``, the local ``gcloud auth print-identity-token``), and
``InvokerCheck`` refuses, before the function runs, what Cloud Run would refuse:

- no bearer token: 403, as a request that "was not authenticated";
- a token that does not verify (another key, another audience, expired, not a JWT,
  ``alg: none``): 401;
- a verified token for a principal outside the function's invoker group: 403.

The token is passed on to the function as Cloud Run passes it (the functions read its
``email`` as ``authenticated_as``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

__all__ = [
    "ISSUER",
    "LOCAL_OPERATOR",
    "TOKEN_LIFETIME_S",
    "InvalidIdTokenError",
    "InvokerCheck",
    "LocalIdTokens",
    "bearer_header",
    "member_matches",
]

ISSUER = "https://accounts.google.com"
"""The ``iss`` of Google-signed ID tokens, which local tokens carry too."""
TOKEN_LIFETIME_S = 3600
"""Google's ID tokens last an hour."""
LOCAL_OPERATOR = "operator@cascade.local"
"""Who ``cascade id-token`` speaks for unless told otherwise; the local invoker groups
hold it by default (``CASCADE_LOCAL_*_HTTP_INVOKERS``)."""
KEY_ID = "cascade-local"
_MAX_TOKEN_CHARS = 8192


class InvalidIdTokenError(ValueError):
    """The token does not verify: signature, audience, issuer, times or shape."""


class LocalIdTokens:
    """The local cloud's token issuer: one RSA key, made on first use and kept in
    ``key_file`` (readable by its owner only) so every process signs and verifies alike."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._private_pem: bytes | None = None
        self._public_pem: str | None = None
        self._signer: Any = None

    def _private_key(self) -> bytes:
        if self._private_pem is None:
            self._private_pem = self._load_or_create()
        return self._private_pem

    def _load_or_create(self) -> bytes:
        with contextlib.suppress(FileNotFoundError):
            return self.key_file.read_bytes()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked: a process racing this one
        # either wins or reads the winner's complete key.
        descriptor, temporary = tempfile.mkstemp(dir=self.key_file.parent, prefix=".key-")
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(pem)
            with contextlib.suppress(FileExistsError):
                os.link(temporary, self.key_file)
        finally:
            os.unlink(temporary)
        return self.key_file.read_bytes()

    def _public_key(self) -> str:
        if self._public_pem is None:
            key = serialization.load_pem_private_key(self._private_key(), password=None)
            self._public_pem = (
                key.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()
            )
        return self._public_pem

    def mint(
        self, email: str, audience: str, *, lifetime_s: int = TOKEN_LIFETIME_S, now: float = 0
    ) -> str:
        """An ID token for ``email`` to call ``audience`` (a function's URL)."""
        issued = int(now or time.time())
        if self._signer is None:
            self._signer = crypt.RSASigner.from_string(  # type: ignore[no-untyped-call]
                self._private_key(), key_id=KEY_ID
            )
        signer = self._signer
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "sub": email,
            "email": email,
            "email_verified": True,
            "iat": issued,
            "exp": issued + lifetime_s,
        }
        token: bytes = jwt.encode(signer, payload)  # type: ignore[no-untyped-call]
        return token.decode()

    def verify(self, token: str, audience: str) -> str:
        """The verified token's ``email``; InvalidIdTokenError when it does not verify."""
        if len(token) > _MAX_TOKEN_CHARS:
            raise InvalidIdTokenError("the token is too long")
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs={KEY_ID: self._public_key()}, audience=audience
            )
        except (ValueError, TypeError) as error:  # google.auth raises ValueError subclasses
            raise InvalidIdTokenError(str(error)) from error
        if claims.get("iss") != ISSUER:
            raise InvalidIdTokenError(f"issuer {claims.get('iss')!r} is not {ISSUER}")
        email = claims.get("email")
        if not isinstance(email, str) or not email or claims.get("email_verified") is not True:
            raise InvalidIdTokenError("the token carries no verified email")
        return email


def bearer_header(key_file: Path, audience: str, email: str = LOCAL_OPERATOR) -> dict[str, str]:
    """``Authorization`` for calling ``audience`` as ``email`` (tests, scripts)."""
    return {"Authorization": f"Bearer {LocalIdTokens(key_file).mint(email, audience)}"}


def member_matches(member: str, email: str) -> bool:
    """Whether IAM member ``member`` names the principal ``email``: ``user:`` and
    ``serviceAccount:`` by email, case-insensitive. ``domain:`` never matches here: IAM
    matches it by the account's Google Workspace domain (the token's ``hd``), not by the
    address, and local tokens name no Workspace; ``group:`` never either (IAM expands
    groups). Stricter than IAM, never more lenient."""
    kind, _, value = member.partition(":")
    if not value or not email:
        return False
    return kind in ("user", "serviceAccount") and value.lower() == email.lower()


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class InvokerCheck:
    """A WSGI app that admits only the function's invokers, as Cloud Run does."""

    app: WsgiApp
    tokens: LocalIdTokens
    audience: str
    members: tuple[str, ...]
    function: str

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        refusal = self._refusal(environ.get("HTTP_AUTHORIZATION", ""))
        if refusal is None:
            return self.app(environ, start_response)
        status, text = refusal
        body = text.encode()
        start_response(
            status,
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _refusal(self, authorization: str) -> tuple[str, str] | None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return (
                "403 Forbidden",
                f"The request was not authenticated: {self.function} takes an ID token "
                "(Authorization: Bearer; locally `cascade id-token`).\n",
            )
        try:
            email = self.tokens.verify(token.strip(), self.audience)
        except InvalidIdTokenError as error:
            return "401 Unauthorized", f"The ID token could not be verified: {error}\n"
        if not any(member_matches(member, email) for member in self.members):
            return (
                "403 Forbidden",
                f"{email} may not invoke {self.function}: not in its invoker group.\n",
            )
        return None
