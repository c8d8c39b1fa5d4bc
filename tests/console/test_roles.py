"""The console on Cloud Run checks the signed-in caller's role before an action does
anything: the HTTP functions' invoker lists (cascade.console.roles, IapCallers)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from unittest.mock import create_autospec

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from cascade.console import Caller, ConsoleConfig
from cascade.console.actions import (
    ALL_ROLES,
    RoleRequiredError,
    force_bless_run,
    promote_version,
    request_retrain,
    roll_back_serving,
)
from cascade.console.cloudrun import CloudConsoleSettings, behind_iap
from cascade.console.iap import IAP_ASSERTION_HEADER, IapCallers
from cascade.console.roles import Identity, Role, RoleMembers, role_of_action
from cascade.console.security import CSRF_COOKIE
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.messages import TrainRequest
from cascade.core.run_index import StoreLister
from cascade.core.runs import run_id_for_request
from cascade.deploy.deployer import Deployer
from tests.console.builders import T0
from tests.console.iap_tokens import AUDIENCE, IapIssuer, verifier_for
from tests.console.server import serving

MEMBERS = RoleMembers(
    retrain=("user:Retrainer@Example.com", "group:retrainers@example.com"),
    bless=("user:lead@example.com",),
    review=("domain:stewards.example.org",),
    deploy=("serviceAccount:release-bot@proj.iam.gserviceaccount.com",),
)
EVERYONE = RoleMembers(**{role.value: ("user:root@example.com",) for role in Role})
RUN_ID = run_id_for_request("credit", "console-test")

# ------------------------------------------------------------------ matching


@pytest.mark.parametrize(
    ("identity", "roles"),
    [
        (Identity(email="retrainer@example.com"), {Role.RETRAIN}),
        (Identity(email="RETRAINER@EXAMPLE.COM", hosted_domain="example.com"), {Role.RETRAIN}),
        (Identity(email="lead@example.com"), {Role.BLESS}),
        (Identity(email="lead@example.com.evil.io"), set()),
        (Identity(email="x@evil.io", hosted_domain="stewards.example.org"), {Role.REVIEW}),
        (Identity(email="x@stewards.example.org"), set()),  # no hd: an unmanaged account
        (Identity(email="x@stewards.example.org", hosted_domain="example.org"), set()),
        (Identity(email="release-bot@proj.iam.gserviceaccount.com"), {Role.DEPLOY}),
        (Identity(email="retrainers@example.com"), set()),  # a group's own address
        (Identity(email="nobody@example.com"), set()),
    ],
)
def test_members_match_as_iam_does_except_groups(identity: Identity, roles: set[Role]) -> None:
    assert MEMBERS.roles_of(identity) == roles


def test_the_role_table_names_every_action_route() -> None:
    assert role_of_action("/datasets/credit/retrain") is Role.RETRAIN
    assert role_of_action(f"/runs/{RUN_ID}/bless") is Role.BLESS
    assert role_of_action(f"/datasets/credit/quarantine/{RUN_ID}/release") is Role.REVIEW
    assert role_of_action(f"/datasets/credit/quarantine/{RUN_ID}/discard") is Role.REVIEW
    assert role_of_action("/datasets/credit/schema") is Role.REVIEW
    assert role_of_action("/models/credit/rollback") is Role.DEPLOY
    assert role_of_action("/models/credit/promote") is Role.DEPLOY
    assert role_of_action("/datasets/credit/retrain/x") is None
    assert role_of_action("/models/credit/rollback/../../runs/x/bless") is None


@pytest.mark.parametrize(
    "value",
    [
        '{"retrain": ["user:a@b"], "admin": ["user:a@b"]}',
        '{"retrain": ["user:a b@c"]}',
        '{"retrain": "user:a@b"}',
        '{"retrain": ["' + "user:" + "a" * 400 + '@b"]}',
    ],
)
def test_a_malformed_role_list_stops_the_service_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CASCADE_CONSOLE_IAP_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("CASCADE_CONSOLE_ALLOWED_HOSTS", '["console.example.com"]')
    monkeypatch.setenv("CASCADE_CONSOLE_ROLES", value)

    with pytest.raises(ValueError, match="roles"):
        CloudConsoleSettings()


def test_the_console_settings_read_terraforms_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CASCADE_CONSOLE_IAP_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("CASCADE_CONSOLE_ALLOWED_HOSTS", '["cascade-console-1.a.run.app"]')
    monkeypatch.setenv("CASCADE_CONSOLE_ROLES", '{"retrain": ["user:a@b.c"], "deploy": []}')
    monkeypatch.setenv("PORT", "9000")

    settings = CloudConsoleSettings()

    assert settings.roles == RoleMembers(retrain=("user:a@b.c",))
    assert settings.port == 9000
    assert settings.allowed_hosts == ["cascade-console-1.a.run.app"]


# ------------------------------------------------------------------ the gate, unit


def _request(method: str, path: str, assertion: str | None) -> Request:
    headers = [] if assertion is None else [(IAP_ASSERTION_HEADER.encode(), assertion.encode())]
    return Request({"type": "http", "method": method, "path": path, "headers": headers})


@pytest.mark.parametrize("action", ["release", "discard"])
def test_a_review_needs_the_review_role(action: str) -> None:
    issuer = IapIssuer()
    verifier, _ = verifier_for(issuer)
    callers = IapCallers(verifier, MEMBERS)
    path = f"/datasets/credit/quarantine/{RUN_ID}/{action}"

    with pytest.raises(RoleRequiredError) as refused:
        callers(_request("POST", path, issuer.assertion("lead@example.com")))
    steward = callers(_request("POST", path, issuer.assertion("s@x.io", hd="stewards.example.org")))

    assert refused.value.status_code == 403
    assert "review role" in refused.value.detail
    assert "review_http_invokers" in refused.value.detail
    assert steward.name == "s@x.io"


def test_reading_needs_no_role_and_an_unknown_action_needs_every_role() -> None:
    issuer = IapIssuer()
    verifier, _ = verifier_for(issuer)

    reader = IapCallers(verifier, MEMBERS)(_request("GET", "/runs", issuer.assertion("n@x.io")))
    with pytest.raises(HTTPException) as refused:
        IapCallers(verifier, MEMBERS)(
            _request("POST", "/datasets/credit/new-action", issuer.assertion("lead@example.com"))
        )
    root = IapCallers(verifier, EVERYONE)(
        _request("POST", "/datasets/credit/new-action", issuer.assertion("root@example.com"))
    )

    assert reader.roles == frozenset()
    assert refused.value.status_code == 403
    assert root.roles == ALL_ROLES


def test_the_local_user_may_do_everything_as_before() -> None:
    assert Caller("ada@laptop").roles == ALL_ROLES


# ------------------------------------------------------------------ the console, served


@dataclass
class CloudConsole:
    artifacts: MemoryArtifactStore
    bus: RecordingBus
    deployer: Any
    issuer: IapIssuer
    client: httpx.Client

    def post(self, path: str, email: str | None, hd: str | None = None, **form: str) -> Any:
        token = secrets.token_urlsafe(32)
        self.client.cookies.set(CSRF_COOKIE, token)
        headers = (
            {} if email is None else {IAP_ASSERTION_HEADER: self.issuer.assertion(email, hd=hd)}
        )
        return self.client.post(path, data={"csrf_token": token, **form}, headers=headers)


@pytest.fixture
def cloud() -> Iterator[CloudConsole]:
    issuer = IapIssuer()
    verifier, _ = verifier_for(issuer)
    artifacts = MemoryArtifactStore("cascade-artifacts")
    bus = RecordingBus()
    deployer = create_autospec(Deployer, instance=True)
    deployer.restore_previous.return_value = ("2", "1")
    config = ConsoleConfig(
        artifacts=artifacts,
        lister=StoreLister(artifacts),
        bus=lambda: bus,
        caller_of=lambda request: Caller("never-used"),
        deployer=lambda: deployer,
    )
    app = behind_iap(config, verifier, MEMBERS)
    with serving(app) as url, httpx.Client(base_url=url) as client:
        yield CloudConsole(artifacts, bus, deployer, issuer, client)


FORM_ID = "f" * 24


def test_retrain_is_refused_without_the_role_and_nothing_is_published(
    cloud: CloudConsole,
) -> None:
    refused = cloud.post(
        "/datasets/credit/retrain", "lead@example.com", reason="drift", form_id=FORM_ID
    )

    assert refused.status_code == 403
    assert "retrain role" in refused.text
    assert "train_http_invokers" in refused.text
    assert cloud.bus.published == []


def test_retrain_is_allowed_with_the_role_and_records_the_signed_in_caller(
    cloud: CloudConsole,
) -> None:
    done = cloud.post(
        "/datasets/credit/retrain", "Retrainer@example.com", reason="drift", form_id=FORM_ID
    )

    assert done.status_code == 303
    [message] = cloud.bus.published
    assert isinstance(message, TrainRequest)
    assert message.reason.startswith("retrain by Retrainer@example.com from the console")


def test_a_group_member_is_refused_with_what_to_do(cloud: CloudConsole) -> None:
    refused = cloud.post(
        "/datasets/credit/retrain", "someone@example.com", reason="drift", form_id=FORM_ID
    )

    assert refused.status_code == 403
    assert "group:retrainers@example.com" in refused.text
    assert "list user:someone@example.com" in refused.text


def test_force_bless_needs_the_bless_role(cloud: CloudConsole) -> None:
    refused = cloud.post(f"/runs/{RUN_ID}/bless", "retrainer@example.com", reason="ship it")
    allowed = cloud.post(f"/runs/{RUN_ID}/bless", "lead@example.com", reason="ship it")

    assert refused.status_code == 403
    assert "bless role" in refused.text
    assert allowed.status_code != 403  # past the check: this run has no evaluation
    assert cloud.bus.published == []


def test_rollback_and_promote_need_the_deploy_role(cloud: CloudConsole) -> None:
    bot = "release-bot@proj.iam.gserviceaccount.com"
    for path, form in (("rollback", {}), ("promote", {"version": "2"})):
        refused = cloud.post(f"/models/credit/{path}", "lead@example.com", reason="bad", **form)
        assert refused.status_code == 403, path
        assert "deploy_approvers" in refused.text, path
    cloud.deployer.restore_previous.assert_not_called()
    cloud.deployer.promote.assert_not_called()

    rolled = cloud.post("/models/credit/rollback", bot, reason="bad canary")
    promoted = cloud.post("/models/credit/promote", bot, reason="good", version="2")

    assert (rolled.status_code, promoted.status_code) == (303, 303)
    cloud.deployer.restore_previous.assert_called_once_with(
        "credit", actor=bot, reason="bad canary"
    )
    cloud.deployer.promote.assert_called_once_with("credit", "2", actor=bot, reason="good")


def test_saving_a_schema_needs_the_review_role(cloud: CloudConsole) -> None:
    form = {"schema": "{}", "generation": "0", "reason": "new column"}
    refused = cloud.post("/datasets/credit/schema", "lead@example.com", **form)
    allowed = cloud.post("/datasets/credit/schema", "s@x.io", hd="stewards.example.org", **form)

    assert refused.status_code == 403
    assert allowed.status_code != 403


def test_an_action_without_an_assertion_is_a_401_and_does_nothing(cloud: CloudConsole) -> None:
    answer = cloud.post("/datasets/credit/retrain", None, reason="drift", form_id=FORM_ID)

    assert answer.status_code == 401
    assert cloud.bus.published == []


def test_pages_open_to_any_signed_in_caller(cloud: CloudConsole) -> None:
    headers = {IAP_ASSERTION_HEADER: cloud.issuer.assertion("viewer@example.com")}

    assert cloud.client.get("/healthz", headers=headers).status_code == 200
    assert cloud.client.get("/healthz").status_code == 401


# ------------------------------------------------------------------ the actions themselves


def test_each_action_checks_its_role_before_it_does_anything() -> None:
    nobody = Caller("nobody@example.com", roles=frozenset())
    artifacts = MemoryArtifactStore("cascade-artifacts")
    bus = RecordingBus()
    deployer = create_autospec(Deployer, instance=True)

    calls = [
        (Role.RETRAIN, lambda: request_retrain(bus, nobody, "credit", "why", FORM_ID)),
        (Role.DEPLOY, lambda: roll_back_serving(deployer, nobody, "credit", "why")),
        (Role.DEPLOY, lambda: promote_version(deployer, nobody, "credit", "1", "why")),
        (Role.BLESS, lambda: force_bless_run(artifacts, bus, nobody, RUN_ID, "why", T0)),
    ]
    for role, call in calls:
        with pytest.raises(RoleRequiredError) as refused:
            call()
        assert refused.value.role is role
    assert bus.published == []
    assert deployer.mock_calls == []
