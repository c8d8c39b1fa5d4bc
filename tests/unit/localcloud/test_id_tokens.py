"""Cloud Run's invoker check in front of the local HTTP functions, against hostile tokens.

Only an ID token the local issuer signed, for this function's URL, unexpired, naming a
member of the function's invoker group, reaches the function; every other request is
answered before it (401 for a token that does not verify, 403 for none or for someone
outside the group), as Cloud Run answers.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from cascade.localcloud.id_tokens import (
    LOCAL_OPERATOR,
    InvalidIdTokenError,
    InvokerCheck,
    LocalIdTokens,
    member_matches,
)

URL = "http://127.0.0.1:8811/"
MEMBERS = ("user:operator@cascade.local", "serviceAccount:ci@proj.iam.gserviceaccount.com")


def _function(reached: list[str]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        reached.append(environ.get("HTTP_AUTHORIZATION", ""))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"ok": true}']

    return app


@pytest.fixture(name="tokens")
def tokens_fixture(tmp_path: Path) -> LocalIdTokens:
    return LocalIdTokens(tmp_path / "state" / "id-token-key.pem")


def _call(tokens: LocalIdTokens, authorization: str | None) -> tuple[Response, list[str]]:
    reached: list[str] = []
    check = InvokerCheck(
        _function(reached), tokens, audience=URL, members=MEMBERS, function="train-http"
    )
    headers = {} if authorization is None else {"Authorization": authorization}
    response = Client(check).post("/", json={"dataset": "credit"}, headers=headers)
    return response, reached


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": URL,
        "sub": LOCAL_OPERATOR,
        "email": LOCAL_OPERATOR,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(changes)
    return claims


def test_an_invoker_s_token_reaches_the_function_with_its_header(tokens: LocalIdTokens) -> None:
    token = tokens.mint(LOCAL_OPERATOR, URL)

    response, reached = _call(tokens, f"Bearer {token}")

    assert response.status_code == 200
    assert reached == [f"Bearer {token}"]  # passed on, as Cloud Run passes it


def test_a_service_account_member_is_matched_by_email_case_insensitively(
    tokens: LocalIdTokens,
) -> None:
    response, _ = _call(tokens, f"Bearer {tokens.mint('CI@proj.iam.gserviceaccount.com', URL)}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer   ", "Basic b3BlcmF0b3I6eA==", "token-without-scheme"],
    ids=["absent", "empty", "bearer-alone", "bearer-blank", "basic", "no-scheme"],
)
def test_a_request_without_a_bearer_token_is_403_and_never_reaches_the_function(
    tokens: LocalIdTokens, authorization: str | None
) -> None:
    response, reached = _call(tokens, authorization)

    assert response.status_code == 403
    assert "not authenticated" in response.get_data(as_text=True)
    assert reached == []


def _forged(tokens: LocalIdTokens, tmp_path: Path) -> dict[str, str]:
    """Tokens that must not verify, each with what is wrong with it."""
    good = tokens.mint(LOCAL_OPERATOR, URL)
    header, _, signature = good.split(".")
    stranger = LocalIdTokens(tmp_path / "other-key.pem")
    return {
        "another-issuer-key": stranger.mint(LOCAL_OPERATOR, URL),
        "another-audience": tokens.mint(LOCAL_OPERATOR, "http://127.0.0.1:8812/"),
        "expired": tokens.mint(LOCAL_OPERATOR, URL, now=time.time() - 7200),
        "issued-in-the-future": tokens.mint(LOCAL_OPERATOR, URL, now=time.time() + 7200),
        "alg-none": f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims())}.",
        "alg-hs256-with-the-public-key": (
            f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(_claims())}.{signature}"
        ),
        "payload-swapped": f"{header}.{_segment(_claims(email='root@cascade.local'))}.{signature}",
        "not-a-jwt": "not.a.jwt",
        "one-segment": "eyJhbGciOiJSUzI1NiJ9",
        "huge": "a" * 100_000,
    }


@pytest.mark.parametrize(
    "case",
    [
        "another-issuer-key",
        "another-audience",
        "expired",
        "issued-in-the-future",
        "alg-none",
        "alg-hs256-with-the-public-key",
        "payload-swapped",
        "not-a-jwt",
        "one-segment",
        "huge",
    ],
)
def test_a_token_that_does_not_verify_is_401(
    tokens: LocalIdTokens, tmp_path: Path, case: str
) -> None:
    response, reached = _call(tokens, f"Bearer {_forged(tokens, tmp_path)[case]}")

    assert response.status_code == 401, response.get_data(as_text=True)
    assert "could not be verified" in response.get_data(as_text=True)
    assert reached == []


def test_a_verified_stranger_is_403_naming_who_and_what(tokens: LocalIdTokens) -> None:
    response, reached = _call(tokens, f"Bearer {tokens.mint('mallory@example.com', URL)}")

    assert response.status_code == 403
    assert "mallory@example.com may not invoke train-http" in response.get_data(as_text=True)
    assert reached == []


def test_a_token_of_another_issuer_or_without_a_verified_email_is_refused(
    tokens: LocalIdTokens,
) -> None:
    """Signed by the local key but not what Google issues: refused all the same."""
    from google.auth import crypt, jwt

    signer = crypt.RSASigner.from_string(tokens._private_key(), key_id="cascade-local")
    for claims, why in [
        (_claims(iss="https://evil.example"), "issuer"),
        (_claims(email_verified=False), "verified email"),
        (_claims(email=""), "verified email"),
    ]:
        token = jwt.encode(signer, claims).decode()
        with pytest.raises(InvalidIdTokenError, match=why):
            tokens.verify(token, URL)


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    """The first use makes the key; racing processes (here threads with their own
    issuers) all end with the same one, so a token one mints another verifies."""
    key_file = tmp_path / "id-token-key.pem"
    issuers = [LocalIdTokens(key_file) for _ in range(6)]
    start = threading.Barrier(len(issuers), timeout=30)
    tokens: list[str] = []

    def mint(issuer: LocalIdTokens) -> None:
        start.wait()
        tokens.append(issuer.mint(LOCAL_OPERATOR, URL))

    threads = [threading.Thread(target=mint, args=(issuer,)) for issuer in issuers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(tokens) == len(issuers)
    verifier = LocalIdTokens(key_file)
    assert all(verifier.verify(token, URL) == LOCAL_OPERATOR for token in tokens)
    assert key_file.stat().st_mode & 0o077 == 0  # readable by its owner only
    assert [path.name for path in tmp_path.iterdir()] == ["id-token-key.pem"]


@pytest.mark.parametrize(
    ("member", "email", "matches"),
    [
        ("user:ana@example.com", "ANA@example.com", True),
        ("user:ana@example.com", "ana@example.com.evil", False),
        ("domain:example.com", "ana@example.com", False),  # IAM: the Workspace, not the address
        ("domain:example.com", "ana@notexample.com", False),
        ("group:team@example.com", "team@example.com", False),  # IAM expands groups
        ("allUsers", "ana@example.com", False),
        ("user:", "", False),
    ],
)
def test_members_match_as_iam_names_them(member: str, email: str, matches: bool) -> None:
    assert member_matches(member, email) is matches
