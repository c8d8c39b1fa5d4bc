"""Quarantine review: release and discard of a quarantined file, from the step code and
through the ``review-http`` function (audited like force-bless)."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from werkzeug.test import TestResponse

from cascade.cli import quarantine_commands
from cascade.cli.main import cli
from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, DataValidated
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord
from cascade.core.topology import load_topology
from cascade.steps.quarantine_review import (
    CannotReviewError,
    UnknownRunError,
    discard,
    quarantined_runs,
    read_review,
    release,
    release_run_id,
    review_path,
)
from cascade.steps.validate import handle_object_finalized
from cascade.validation.manifest import AcceptedFile
from tests.function_client import REPO_ROOT, FunctionUnderTest, load_function
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context

LANDING, ARTIFACTS, DATASET = "cascade-landing", "cascade-artifacts", "credit"
TOPOLOGY = load_topology(REPO_ROOT / "infra" / "topology.yaml")
JSON = {"content-type": "application/json"}
REASON = "new cities opened this quarter; checked with the data owner"


def _csv(seed: int, shift: float = 0.0, cities: tuple[str, ...] = ("a", "b")) -> bytes:
    generator = random.Random(seed)
    lines = ["amount,age,city"]
    for _ in range(600):
        amount = f"{generator.gauss(100 + shift, 10):.3f}"
        lines.append(f"{amount},{generator.randint(20, 60)},{generator.choice(cities)}")
    return ("\n".join(lines) + "\n").encode()


def _land(storage: FakeStorageClient, name: str, data: bytes) -> StorageObjectEvent:
    generation = storage.put(LANDING, name, data)
    return StorageObjectEvent(
        event_id=f"event-{name}-{generation}",
        bucket=LANDING,
        name=name,
        generation=generation,
        size=len(data),
    )


def _bus(ctx: StepContext) -> RecordingBus:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


@pytest.fixture
def accepted(ctx: StepContext, storage: FakeStorageClient) -> str:
    """The dataset's first file, accepted: its run id."""
    outcome = handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-1.csv", _csv(1)))
    assert outcome is not None
    assert outcome.state == "succeeded"
    [message] = _bus(ctx).of_type(DataValidated)
    return message.run_id


@pytest.fixture
def quarantined(ctx: StepContext, storage: FakeStorageClient, accepted: str) -> RunRecord:
    """A second file with new cities (a domain error) whose amounts moved (a drift):
    quarantined. The bus is cleared afterwards."""
    data = _csv(3, shift=15.0, cities=("a", "b", "z", "y"))
    outcome = handle_object_finalized(ctx, _land(storage, f"{DATASET}/day-2.csv", data))
    assert outcome is not None
    assert outcome.state == "rejected", outcome.summary
    assert outcome.outputs["blocking"] == [{"check": "domain", "feature": "city"}]
    [alert] = _bus(ctx).of_type(Alert)
    run = ctx.ledger.get(alert.run_id or "")
    assert run is not None
    _bus(ctx).published.clear()
    return run


def _quarantine_copy(run: RunRecord) -> str:
    return f"{DatasetPaths(DATASET).quarantine(run.run_id)}/day-2.csv"


def _objects(ctx: StepContext) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name in ctx.artifacts.list_names(""):
        stored = ctx.artifacts.read(name)
        assert stored is not None
        found[name] = stored.data
    return found


# ------------------------------------------------------------------ release


def test_a_released_file_is_revalidated_with_its_finding_acknowledged_and_continues(
    ctx: StepContext, quarantined: RunRecord
) -> None:
    released = release(ctx, quarantined.run_id, actor="ana", reason=REASON, via="cli")

    new_id = release_run_id(DATASET, quarantined.run_id)
    assert released.run.run_id == new_id
    assert released.run.state == "running"  # transform continues it
    assert released.run.steps["validate"].state == "succeeded", released.summary
    [message] = _bus(ctx).of_type(DataValidated)
    assert message.run_id == new_id
    warnings = released.run.steps["validate"].outputs["warnings"]
    assert any("'city'" in warning for warning in warnings)
    skews = released.run.steps["validate"].outputs["value_skews"]
    assert ("drift", "amount") in {(skew["check"], skew["feature"]) for skew in skews}
    manifest = ctx.artifacts.read_model(
        DatasetPaths(DATASET).accepted_manifest(new_id), AcceptedFile
    )
    assert manifest is not None
    assert manifest[0].uri == f"gs://{LANDING}/{DATASET}/day-2.csv"


def test_a_release_records_who_and_why_on_both_runs_and_in_the_review(
    ctx: StepContext, quarantined: RunRecord
) -> None:
    release(ctx, quarantined.run_id, actor="ana", reason=REASON, via="cli")

    review = read_review(ctx, DATASET, quarantined.run_id)
    assert review is not None
    assert (review.action, review.actor, review.reason, review.via) == (
        "release",
        "ana",
        REASON,
        "cli",
    )
    assert [(f.check, f.feature) for f in review.acknowledged] == [("domain", "city")]
    original = ctx.ledger.get(quarantined.run_id)
    assert original is not None
    assert original.state == "rejected"
    assert original.steps["review"].outputs["review"]["actor"] == "ana"
    assert original.lineage["quarantine_review"]["reason"] == REASON
    new = ctx.ledger.get(release_run_id(DATASET, quarantined.run_id))
    assert new is not None
    assert new.trigger.request_id == f"release:{quarantined.run_id}"
    assert "ana" in new.trigger.reason
    assert REASON in new.trigger.reason
    assert new.lineage["released_from"] == quarantined.run_id
    [alert] = [a for a in _bus(ctx).of_type(Alert) if a.step == "review"]
    assert alert.severity == "WARNING"
    assert alert.details["actor"] == "ana"


def test_a_release_reads_the_quarantine_copy_once_the_landed_generation_is_gone(
    ctx: StepContext, storage: FakeStorageClient, quarantined: RunRecord
) -> None:
    landed = quarantined.trigger.uri.removeprefix(f"gs://{LANDING}/")
    storage.bucket(LANDING).blob(landed).delete()

    released = release(ctx, quarantined.run_id, actor="ana", reason=REASON, via="cli")

    assert released.run.steps["validate"].state == "succeeded", released.summary
    assert released.review.read_from is not None
    assert released.review.read_from.startswith(
        f"gs://{ARTIFACTS}/{_quarantine_copy(quarantined)}#"
    )
    manifest = ctx.artifacts.read_model(
        DatasetPaths(DATASET).accepted_manifest(released.run.run_id), AcceptedFile
    )
    assert manifest is not None
    assert manifest[0].uri == f"gs://{ARTIFACTS}/{_quarantine_copy(quarantined)}"


def test_a_second_release_is_refused_and_starts_nothing_new(
    ctx: StepContext, quarantined: RunRecord
) -> None:
    release(ctx, quarantined.run_id, actor="ana", reason=REASON, via="cli")
    published = len(_bus(ctx).published)

    with pytest.raises(CannotReviewError, match="already released by ana"):
        release(ctx, quarantined.run_id, actor="bo", reason="me too please", via="cli")

    assert len(_bus(ctx).published) == published  # every step was done: nothing again
    review = read_review(ctx, DATASET, quarantined.run_id)
    assert review is not None
    assert review.actor == "ana"


def test_an_accepted_run_cannot_be_released_or_discarded(ctx: StepContext, accepted: str) -> None:
    with pytest.raises(CannotReviewError, match="not quarantined"):
        release(ctx, accepted, actor="ana", reason=REASON, via="cli")
    with pytest.raises(CannotReviewError, match="not quarantined"):
        discard(ctx, accepted, actor="ana", reason=REASON, via="cli")

    assert ctx.artifacts.stat(review_path(DATASET, accepted)) is None


def test_an_unknown_run_is_refused_as_unknown(ctx: StepContext) -> None:
    with pytest.raises(UnknownRunError):
        release(ctx, f"{DATASET}-{'0' * 16}", actor="ana", reason=REASON, via="cli")


# ------------------------------------------------------------------ discard


def test_discard_deletes_only_the_quarantine_copy_and_records_who_and_why(
    ctx: StepContext, storage: FakeStorageClient, quarantined: RunRecord
) -> None:
    review = discard(ctx, quarantined.run_id, actor="ana", reason="a broken export", via="cli")

    assert ctx.artifacts.stat(_quarantine_copy(quarantined)) is None
    prefix = DatasetPaths(DATASET).quarantine(quarantined.run_id)
    assert ctx.artifacts.stat(f"{prefix}/anomalies.pbtxt") is not None
    assert storage.bucket(LANDING).get_blob(f"{DATASET}/day-2.csv") is not None
    assert review.deleted == [f"gs://{ARTIFACTS}/{_quarantine_copy(quarantined)}"]
    run = ctx.ledger.get(quarantined.run_id)
    assert run is not None
    assert run.state == "rejected"
    assert run.steps["review"].outputs["review"]["action"] == "discard"
    assert run.steps["review"].outputs["review"]["reason"] == "a broken export"
    assert _bus(ctx).of_type(DataValidated) == []
    with pytest.raises(CannotReviewError, match="already discarded"):
        release(ctx, quarantined.run_id, actor="bo", reason=REASON, via="cli")


def test_the_list_shows_quarantined_runs_only(
    ctx: StepContext, quarantined: RunRecord, accepted: str
) -> None:
    found = list(quarantined_runs(ctx, DATASET))

    assert [q.run.run_id for q in found] == [quarantined.run_id]
    assert [(f.check, f.feature) for f in found[0].blocking] == [("domain", "city")]
    assert list(quarantined_runs(ctx)) == found


# ------------------------------------------------------------------ review-http


@pytest.fixture
def review_http(
    monkeypatch: pytest.MonkeyPatch, ctx: StepContext, quarantined: RunRecord
) -> FunctionUnderTest:
    function, _ = load_function(TOPOLOGY.functions["review-http"], monkeypatch, ctx.clock())
    monkeypatch.setattr(function.module, "context", lambda: ctx)  # main.py imported it
    return function


def _post(
    function: FunctionUnderTest, body: Any, headers: dict[str, str] | None = None
) -> TestResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response: TestResponse = function.client.post("/", data=data, headers=headers or JSON)
    return response


def _token(email: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"email": email}).encode()).decode()
    return f"Bearer e30.{payload.rstrip('=')}.signature"


def test_review_http_releases_and_records_the_authenticated_caller(
    review_http: FunctionUnderTest, ctx: StepContext, quarantined: RunRecord
) -> None:
    body = {"action": "release", "run_id": quarantined.run_id, "reason": REASON}
    headers = {**JSON, "Authorization": _token("ana@example.com")}

    response = _post(review_http, body, headers)

    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["release_run_id"] == release_run_id(DATASET, quarantined.run_id)
    assert answer["release_state"] == "running"
    assert answer["review"]["authenticated_as"] == "ana@example.com"
    assert answer["review"]["actor"] == "ana@example.com"
    again = _post(review_http, body, headers)
    assert again.status_code == 409
    assert "already released" in again.get_json()["error"]


def test_review_http_discards_with_a_named_actor(
    review_http: FunctionUnderTest, ctx: StepContext, quarantined: RunRecord
) -> None:
    body = {
        "action": "discard",
        "run_id": quarantined.run_id,
        "reason": "bad export",
        "actor": "bo",
    }

    response = _post(review_http, body)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["review"]["actor"] == "bo"
    assert ctx.artifacts.stat(_quarantine_copy(quarantined)) is None


def test_review_http_refuses_an_accepted_run_with_409(
    review_http: FunctionUnderTest, ctx: StepContext, accepted: str
) -> None:
    body = {"action": "release", "run_id": accepted, "reason": REASON, "actor": "ana"}

    response = _post(review_http, body)

    assert response.status_code == 409
    assert "not quarantined" in response.get_json()["error"]


def _deep(depth: int) -> bytes:
    return b'{"action": "release", "reason": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        (_deep(10_000), 400, None, "deeper than"),
        (
            {"action": "release", "run_id": "x", "reason": "x" * (5 * 1024 * 1024)},
            413,
            None,
            "65536 bytes",
        ),
        ({"action": "release", "run_id": "../../credit-0", "reason": REASON}, 400, "run_id", ""),
        ({"action": "release", "run_id": "credit-../x", "reason": REASON}, 400, "run_id", ""),
        (
            {"action": "release", "run_id": "credit-xyz", "reason": REASON, "actor": "a"},
            400,
            None,
            "run ids",
        ),
        ({"action": "bless", "run_id": "credit-0", "reason": REASON}, 400, "action", ""),
        ({"action": "release", "reason": REASON}, 400, "run_id", ""),
        ({"action": "release", "run_id": "credit-0", "reason": "x" * 3000}, 400, "reason", ""),
        (
            {"action": "release", "run_id": "credit-0", "reason": REASON, "force": 1},
            400,
            "force",
            "",
        ),
        (
            {"action": "release", "run_id": f"{DATASET}-{'0' * 16}", "reason": REASON},
            400,
            "actor",
            "",
        ),
        (
            {
                "action": "release",
                "run_id": f"{DATASET}-{'0' * 16}",
                "reason": REASON,
                "actor": "a",
            },
            404,
            "run_id",
            "no run",
        ),
    ],
    ids=[
        "depth-10000",
        "5MB-reason",
        "dot-dot-run-id",
        "dot-dot-inside-run-id",
        "not-a-system-run-id",
        "unknown-action",
        "no-run-id",
        "long-reason",
        "unknown-field",
        "no-actor-no-identity",
        "unknown-run",
    ],
)
def test_a_bad_review_request_gets_a_json_4xx_and_changes_nothing(
    review_http: FunctionUnderTest,
    ctx: StepContext,
    body: Any,
    status: int,
    field: str | None,
    words: str,
) -> None:
    before = _objects(ctx)

    response = _post(review_http, body)

    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    answer = response.get_json()
    assert words in answer["error"]
    assert len(answer["error"]) < 2_000
    if field is not None:
        assert answer["field"] == field
    assert _objects(ctx) == before
    assert _bus(ctx).published == []


def test_get_on_review_http_is_a_json_405(review_http: FunctionUnderTest) -> None:
    response = review_http.client.get("/")

    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert "POST" in response.get_json()["error"]


# ------------------------------------------------------------------ the CLI


def test_the_cli_lists_shows_and_releases_a_quarantined_run(
    monkeypatch: pytest.MonkeyPatch, ctx: StepContext, quarantined: RunRecord
) -> None:
    monkeypatch.setattr(quarantine_commands, "_context", lambda from_env: ctx)
    monkeypatch.setattr(quarantine_commands, "console", Console(width=250))
    runner = CliRunner()

    listed = runner.invoke(cli, ["quarantine", "list", DATASET])
    shown = runner.invoke(cli, ["quarantine", "show", quarantined.run_id])
    released = runner.invoke(
        cli, ["quarantine", "release", quarantined.run_id, "--reason", REASON, "--actor", "ana"]
    )
    after = runner.invoke(cli, ["quarantine", "show", quarantined.run_id])

    assert listed.exit_code == 0, listed.output
    assert "awaiting review" in listed.output
    assert shown.exit_code == 0, shown.output
    assert "Unexpected string values" in shown.output
    assert released.exit_code == 0, released.output
    assert release_run_id(DATASET, quarantined.run_id) in released.output
    assert "released by ana" in after.output


def test_the_cli_discards_once_and_refuses_the_second_time(
    monkeypatch: pytest.MonkeyPatch, ctx: StepContext, quarantined: RunRecord
) -> None:
    monkeypatch.setattr(quarantine_commands, "_context", lambda from_env: ctx)
    monkeypatch.setattr(quarantine_commands, "console", Console(width=250))
    runner = CliRunner()
    command = ["quarantine", "discard", quarantined.run_id, "--reason", "a broken export"]

    first = runner.invoke(cli, command)
    second = runner.invoke(cli, command)

    assert first.exit_code == 0, first.output
    assert "discarded" in first.output
    assert second.exit_code == 1
    assert "already discarded" in second.output
