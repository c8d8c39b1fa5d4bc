"""The console on Cloud Run: IAP's signed header verified (cascade.console.iap).

Assertions are signed here with a generated ES256 key, shaped as Google documents
(cloud.google.com/iap/docs/signed-headers-howto); IAP's key endpoint is a spec'd
google-auth transport, asserted to be asked exactly what Google's sample asks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cascade.console.iap import (
    IAP_ASSERTION_HEADER,
    IAP_KEYS_URL,
    KEYS_REFETCH_AFTER_S,
    IapGate,
    IapKeys,
)
from cascade.console.roles import Identity
from tests.console.iap_tokens import (
    AUDIENCE,
    IapIssuer,
    key_endpoint,
    public_pem,
    unsigned,
    verifier_for,
)
from tests.console.server import serving


@pytest.fixture
def issuer() -> IapIssuer:
    return IapIssuer()


def refusal(issuer: IapIssuer, assertion: str | None) -> HTTPException:
    verifier, _ = verifier_for(issuer)
    with pytest.raises(HTTPException) as refused:
        verifier.identity(assertion)
    return refused.value


def test_a_valid_assertion_names_its_caller_and_domain(issuer: IapIssuer) -> None:
    verifier, transport = verifier_for(issuer)

    identity = verifier.identity(issuer.assertion("ada@example.com"))

    assert identity == Identity(email="ada@example.com", hosted_domain="example.com")
    assert transport.call_count == 1
    assert transport.call_args.args == (IAP_KEYS_URL,)
    assert transport.call_args.kwargs == {"method": "GET", "timeout": 10.0}


def test_a_consumer_account_has_no_domain(issuer: IapIssuer) -> None:
    verifier, _ = verifier_for(issuer)

    identity = verifier.identity(issuer.assertion("bob@gmail.com", hd=None))

    assert identity.hosted_domain is None


@pytest.mark.parametrize(
    ("what", "override", "why"),
    [
        ("wrong audience", {"aud": "/projects/1/locations/x/services/other"}, "audience"),
        ("expired", {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000}, "xpired"),
        ("issued in the future", {"iat": int(time.time()) + 3600}, "early"),
        ("no expiry", {"exp": None}, "exp"),
        ("another issuer", {"iss": "https://accounts.google.com"}, "not issued by IAP"),
        ("no email", {"email": None}, "no email"),
        ("an email with a newline", {"email": "ada@example.com\nx"}, "no email"),
        ("an email that is a number", {"email": 7}, "no email"),
    ],
)
def test_an_assertion_with_wrong_claims_is_refused(
    issuer: IapIssuer, what: str, override: dict[str, object], why: str
) -> None:
    refused = refusal(issuer, issuer.assertion(**override))

    assert refused.status_code == 401, what
    assert why in str(refused.detail), what


@pytest.mark.parametrize("header", [None, ""])
def test_a_request_without_the_header_is_refused(issuer: IapIssuer, header: str | None) -> None:
    refused = refusal(issuer, header)

    assert refused.status_code == 401
    assert IAP_ASSERTION_HEADER in str(refused.detail)


def test_an_unsigned_alg_none_assertion_is_refused(issuer: IapIssuer) -> None:
    forged = unsigned({"alg": "none", "kid": issuer.key_id}, issuer.claims())

    refused = refusal(issuer, forged)

    assert refused.status_code == 401
    assert "ES256" in str(refused.detail)


def test_an_hs256_assertion_keyed_with_the_public_key_is_refused(issuer: IapIssuer) -> None:
    forged = unsigned({"alg": "HS256", "kid": issuer.key_id}, issuer.claims(), b"x" * 32)

    assert refusal(issuer, forged).status_code == 401


def test_an_assertion_signed_by_another_key_under_a_known_id_is_refused(
    issuer: IapIssuer,
) -> None:
    impostor = IapIssuer(key_id=issuer.key_id)

    refused = refusal(issuer, impostor.assertion())

    assert refused.status_code == 401
    assert "not valid" in str(refused.detail)


def test_a_signature_moved_onto_other_claims_is_refused(issuer: IapIssuer) -> None:
    genuine = issuer.assertion("ada@example.com").split(".")
    other = unsigned({"alg": "ES256", "kid": issuer.key_id}, issuer.claims("eve@example.com"))
    spliced = ".".join([*other.split(".")[:2], genuine[2]])

    assert refusal(issuer, spliced).status_code == 401


def test_an_assertion_naming_an_unpublished_key_is_refused(issuer: IapIssuer) -> None:
    stranger = IapIssuer(key_id="not-published")

    refused = refusal(issuer, stranger.assertion())

    assert refused.status_code == 401
    assert "key" in str(refused.detail)


@pytest.mark.parametrize(
    "garbage",
    [
        "not-a-jwt",
        "a.b.c",
        "....",
        "eyJhbGciOiJFUzI1NiJ9.e30",
        "\u00e9.\u00e9.\u00e9",
        "x" * 10_240,
    ],
)
def test_garbage_and_a_10_kb_header_are_refused(issuer: IapIssuer, garbage: str) -> None:
    assert refusal(issuer, garbage).status_code == 401


def test_keys_are_fetched_once_and_again_for_a_new_key_only_after_a_minute(
    issuer: IapIssuer,
) -> None:
    rotated = IapIssuer(key_id="iap-key-2")
    now = [1000.0]
    transport = key_endpoint({issuer.key_id: public_pem(issuer.key)})
    keys = IapKeys(transport, clock=lambda: now[0])

    assert keys.key(issuer.key_id) is not None
    assert keys.key(issuer.key_id) is not None
    assert keys.key(rotated.key_id) is None  # unknown, but fetched a moment ago
    assert transport.call_count == 1
    transport.return_value.data = f'{{"{rotated.key_id}": {public_pem(rotated.key)!r}}}'.replace(
        "'", '"'
    ).encode()
    now[0] += KEYS_REFETCH_AFTER_S + 1

    assert keys.key(rotated.key_id) is not None
    assert transport.call_count == 2


@pytest.mark.parametrize(("status", "body"), [(500, b"{}"), (200, b"<html>"), (200, b"[1]")])
def test_unreachable_or_broken_keys_are_a_503(issuer: IapIssuer, status: int, body: bytes) -> None:
    transport = key_endpoint({}, status=status)
    transport.return_value.data = body
    keys = IapKeys(transport)

    with pytest.raises(HTTPException) as refused:
        keys.key(issuer.key_id)

    assert refused.value.status_code == 503


# ------------------------------------------------------------------ the gate


def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"spoofable": request.headers.get("x-goog-authenticated-user-email")})


@pytest.fixture
def gated(issuer: IapIssuer) -> Iterator[httpx.Client]:
    verifier, _ = verifier_for(issuer)
    app = Starlette(routes=[Route("/{path:path}", _echo, methods=["GET", "POST"])])
    with serving(IapGate(app, verifier)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_the_gate_lets_a_signed_request_through(gated: httpx.Client, issuer: IapIssuer) -> None:
    answer = gated.get("/runs", headers={IAP_ASSERTION_HEADER: issuer.assertion()})

    assert answer.status_code == 200


@pytest.mark.parametrize("path", ["/runs", "/healthz", "/static/runs.js", "/api/runs"])
def test_the_gate_refuses_every_path_without_an_assertion(gated: httpx.Client, path: str) -> None:
    answer = gated.get(path, headers={"x-goog-authenticated-user-email": "accounts.google.com:a@b"})

    assert answer.status_code == 401
    assert "sign in through IAP" in answer.text


def test_the_gate_refuses_an_assertion_for_another_service(gated: httpx.Client) -> None:
    other = IapIssuer()
    answer = gated.post(
        "/datasets/credit/retrain",
        headers={IAP_ASSERTION_HEADER: other.assertion(aud=AUDIENCE + "x")},
    )

    assert answer.status_code == 401
