"""IAP's signed header, made here: a local ES256 key and assertions shaped as Google's
"Securing your app with signed headers" documents them, and IAP's key endpoint as a
spec'd google-auth transport that serves ``{key id: PEM public key}``."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from unittest.mock import create_autospec

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import jwt
from google.auth.crypt import es256
from google.auth.transport import Request as AuthRequest
from google.auth.transport import Response as AuthResponse

from cascade.console.iap import IAP_ISSUER, IapKeys, IapVerifier

AUDIENCE = "/projects/123456789012/locations/us-central1/services/cascade-console"
KEY_ID = "iap-key-1"


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class IapIssuer:
    """Signs assertions as IAP would, with a key generated for the test."""

    def __init__(self, key_id: str = KEY_ID) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = key_id

    def claims(self, email: str = "ada@example.com", **override: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": AUDIENCE,
            "email": email,
            "exp": now + 600,
            "iat": now,
            "iss": IAP_ISSUER,
            "sub": "accounts.google.com:118179012345678901234",
            "hd": "example.com",
        }
        claims.update(override)
        return {name: value for name, value in claims.items() if value is not None}

    def assertion(self, email: str = "ada@example.com", **override: Any) -> str:
        signer = es256.ES256Signer.from_string(_private_pem(self.key), self.key_id)
        token: bytes = jwt.encode(signer, self.claims(email, **override))
        return token.decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT with any header and no valid signature (``alg: none`` and the like)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)]
    )


def key_endpoint(keys: dict[str, str], status: int = 200) -> Any:
    """google.auth.transport.Request, spec'd, answering IAP's key URL with ``keys``."""
    response = create_autospec(AuthResponse, instance=True)
    response.status = status
    response.data = json.dumps(keys).encode()
    request = create_autospec(AuthRequest, instance=True)
    request.return_value = response
    return request


def verifier_for(*issuers: IapIssuer, audience: str = AUDIENCE) -> tuple[IapVerifier, Any]:
    """A verifier trusting ``issuers``' keys, and the transport it fetches them with."""
    transport = key_endpoint({issuer.key_id: public_pem(issuer.key) for issuer in issuers})
    return IapVerifier(audience, IapKeys(transport)), transport
