"""Hostile bodies on the HTTP control surfaces, posted through functions-framework.

``train-http`` (functions/train/main.py) and ``evaluate-http`` (functions/evaluate/main.py)
are loaded exactly as deployed (tests/function_client.py). Every bad body gets a JSON
4xx that names the problem, never a 5xx, and leaves every stored object as it was: no run
record, claim or lock is created or changed. Run ids come only from the system: a body's
``run_id`` is refused, and a train-requests message may only continue an upload's run
that is waiting for training.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from werkzeug.test import TestResponse

from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, StepInProgressError
from cascade.core.messages import Alert, TrainRequest
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.runs import (
    RunRecord,
    StepRecord,
    run_id_for_object,
    run_id_for_request,
)
from cascade.core.topology import load_topology
from cascade.steps.train import handle_train_request
from cascade.transform.catalog import TransformPointer, latest_transform_name
from tests.function_client import REPO_ROOT, FunctionUnderTest, golden, load_function
from tests.unit.jobs.fakes import FakeJobRunner

TOPOLOGY = load_topology(REPO_ROOT / "infra" / "topology.yaml")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DATASET = "credit"
JSON = {"content-type": "application/json"}
BODY_LIMIT = 64 * 1024
REJECTED = run_id_for_object(DATASET, "landing", "credit/drifted.csv", 3)
WAITING = run_id_for_object(DATASET, "landing", "credit/fresh.csv", 4)


# ------------------------------------------------------------------ fixtures and helpers


def _run(run_id: str, state: str, steps: dict[str, str]) -> RunRecord:
    return RunRecord.model_validate(
        {
            "run_id": run_id,
            "dataset": DATASET,
            "trigger": {"kind": "object", "uri": f"gs://landing/{run_id}#1", "generation": 1},
            "state": state,
            "created_at": NOW,
            "updated_at": NOW,
            "steps": {
                name: StepRecord(state=step_state, attempts=1, started_at=NOW)  # type: ignore[arg-type]
                for name, step_state in steps.items()
            },
        }
    )


def _seed(ctx: StepContext) -> None:
    """A known dataset: a transform, a rejected upload run and one waiting for training."""
    pointer = TransformPointer(
        run_id=WAITING,
        transform_uri=f"gs://cascade-artifacts/runs/{WAITING}/transform/transform.json",
        files=1,
        rows=10,
        created_at=NOW,
    )
    ctx.artifacts.write_json(latest_transform_name(DATASET), pointer)
    ctx.ledger.ensure(_run(REJECTED, "rejected", {"validate": "rejected"}))
    ctx.ledger.ensure(_run(WAITING, "running", {"validate": "succeeded", "transform": "succeeded"}))


def _objects(ctx: StepContext) -> dict[str, bytes]:
    """Every stored object, to show a refused request changed nothing."""
    found: dict[str, bytes] = {}
    for name in ctx.artifacts.list_names(""):
        stored = ctx.artifacts.read(name)
        assert stored is not None
        found[name] = stored.data
    return found


@pytest.fixture
def runner() -> FakeJobRunner:
    return FakeJobRunner()


@pytest.fixture
def train_http(
    monkeypatch: pytest.MonkeyPatch, runner: FakeJobRunner
) -> tuple[FunctionUnderTest, StepContext]:
    function, ctx = load_function(TOPOLOGY.functions["train-http"], monkeypatch, NOW)
    monkeypatch.setattr(
        function.module, "handle_train_request", partial(handle_train_request, runner=runner)
    )
    _seed(ctx)
    return function, ctx


@pytest.fixture
def evaluate_http(monkeypatch: pytest.MonkeyPatch) -> tuple[FunctionUnderTest, StepContext]:
    function, ctx = load_function(TOPOLOGY.functions["evaluate-http"], monkeypatch, NOW)
    monkeypatch.setattr(function.module, "context", lambda: ctx)  # main.py imported it
    _seed(ctx)
    return function, ctx


def _post(
    function: FunctionUnderTest, body: bytes, headers: dict[str, str] | None = None
) -> TestResponse:
    response: TestResponse = function.client.post(
        "/", data=body, headers=JSON if headers is None else headers
    )
    return response


def _post_json(function: FunctionUnderTest, body: Any) -> TestResponse:
    return _post(function, json.dumps(body).encode())


def _refused(response: TestResponse, status: int, *words: str) -> dict[str, Any]:
    """The answer is ``status`` with a JSON ``error`` that contains every one of ``words``."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json", response.get_data(as_text=True)[:200]
    answer: dict[str, Any] = response.get_json()
    for word in words:
        assert word in answer["error"], answer
    assert len(answer["error"]) < 2_000  # names the problem; never echoes a huge body
    return answer


def _deep(depth: int) -> bytes:
    return b'{"dataset": "credit", "reason": ' + b"[" * depth + b"]" * depth + b"}"


# ------------------------------------------------------------------ defect 1: run ids


def test_train_http_refuses_a_forged_run_id_of_an_existing_run(
    train_http: tuple[FunctionUnderTest, StepContext], runner: FakeJobRunner
) -> None:
    function, ctx = train_http
    before = _objects(ctx)

    response = _post_json(function, {"dataset": DATASET, "request_id": "h1", "run_id": REJECTED})

    answer = _refused(response, 400, "run_id")
    assert answer["field"] == "run_id"
    assert _objects(ctx) == before  # the rejected run is untouched, no run was started
    stored = ctx.ledger.get(REJECTED)
    assert stored is not None
    assert stored.state == "rejected"
    assert runner.submitted == []


@pytest.mark.parametrize(
    "run_id",
    ["../../../../../../tmp/x", "credit-r0000000000000000/../../x", "..", "a/b", "%2e%2e"],
)
def test_train_http_refuses_a_path_run_id_and_writes_nothing(
    train_http: tuple[FunctionUnderTest, StepContext], run_id: str
) -> None:
    function, ctx = train_http
    before = _objects(ctx)

    response = _post_json(function, {"dataset": DATASET, "request_id": "h2", "run_id": run_id})

    _refused(response, 400, "run_id")
    assert _objects(ctx) == before


@pytest.mark.parametrize("run_id", ["../../x", "runs/x", "a/b", "..", ".", "", "x y", "a\x00b"])
def test_no_run_id_with_path_characters_becomes_an_object_name(run_id: str) -> None:
    with pytest.raises(BadRequestError, match="run id"):
        RunPaths(run_id)
    with pytest.raises(BadRequestError, match="run id"):
        DatasetPaths(DATASET).quarantine(run_id)


def test_a_train_message_cannot_name_a_run(
    runner: FakeJobRunner, step_context: StepContext
) -> None:
    ctx = step_context
    _seed(ctx)
    before = _objects(ctx)
    forged = [
        TrainRequest(dataset=DATASET, request_id="h1", run_id=REJECTED),
        TrainRequest(dataset=DATASET, request_id=f"run:{REJECTED}", run_id=REJECTED),
        TrainRequest(dataset=DATASET, request_id="h1", run_id=WAITING),  # not as transform
        TrainRequest(dataset=DATASET, request_id="run:credit-x", run_id="credit-x"),
        TrainRequest(dataset="other", request_id=f"run:{WAITING}", run_id=WAITING),
        TrainRequest(
            dataset=DATASET,
            request_id="run:credit-0123456789abcdef",
            run_id="credit-0123456789abcdef",  # well-formed, but no such run
        ),
    ]

    for request in forged:
        with pytest.raises(BadRequestError, match="run"):
            handle_train_request(ctx, request, event_id="m1", runner=runner)

    assert _objects(ctx) == before
    assert runner.submitted == []


def test_transform_still_continues_its_upload_run(
    runner: FakeJobRunner, step_context: StepContext
) -> None:
    ctx = step_context
    _seed(ctx)
    request = TrainRequest(dataset=DATASET, request_id=f"run:{WAITING}", run_id=WAITING)

    outcome = handle_train_request(ctx, request, event_id="m1", runner=runner)

    assert outcome is not None
    assert outcome.state == "succeeded"
    assert [spec.run_id for spec in runner.submitted] == [WAITING]
    # redelivered once the train step is done: a duplicate, not an alert
    assert handle_train_request(ctx, request, event_id="m2", runner=runner) is None


def test_a_request_waits_while_transform_is_still_finishing(
    runner: FakeJobRunner, step_context: StepContext
) -> None:
    ctx = step_context
    ctx.ledger.ensure(_run(WAITING, "running", {"validate": "succeeded", "transform": "running"}))
    request = TrainRequest(dataset=DATASET, request_id=f"run:{WAITING}", run_id=WAITING)

    with pytest.raises(StepInProgressError, match="transform"):
        handle_train_request(ctx, request, event_id="m1", runner=runner)
    assert runner.submitted == []


def test_a_forged_pubsub_message_is_acknowledged_with_an_alert(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample = golden("pubsub_push_request.json")
    body = sample["body"]
    message = TrainRequest(dataset=DATASET, request_id=f"run:{REJECTED}", run_id=REJECTED)
    body["message"]["data"] = base64.b64encode(message.model_dump_json().encode()).decode()
    body["message"]["attributes"] = message.attributes()
    published = datetime.fromisoformat(body["message"]["publishTime"].replace("Z", "+00:00"))
    function, ctx = load_function(TOPOLOGY.functions["train"], monkeypatch, published)
    _seed(ctx)
    before = _objects(ctx)

    status = function.post(sample["path"], sample["headers"], json.dumps(body).encode())

    assert status == 200  # permanent: acknowledged, never redelivered
    assert _objects(ctx) == before
    [alert] = ctx.bus.published  # type: ignore[attr-defined]
    assert isinstance(alert, Alert)
    assert REJECTED in alert.summary


# ------------------------------------------------------------------ defect 5: bad bodies


SURFACES = ["train_http", "evaluate_http"]


def _surface(request: pytest.FixtureRequest, name: str) -> tuple[FunctionUnderTest, StepContext]:
    surface: tuple[FunctionUnderTest, StepContext] = request.getfixturevalue(name)
    return surface


@pytest.mark.parametrize("name", SURFACES)
@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (_deep(10_000), JSON, 400, ("deeper than",)),
        (_deep(9), JSON, 400, ("deeper than",)),
        (b"{not json", JSON, 400, ("not valid JSON",)),
        (b"", JSON, 400, ("not valid JSON",)),
        (b'{"dataset": NaN}', JSON, 400, ("not valid JSON", "NaN")),
        (b'{"dataset": "\xff\xfe"}', JSON, 400, ("UTF-8",)),
        (b"[1, 2]", JSON, 400, ("JSON object",)),
        (b'"credit"', JSON, 400, ("JSON object",)),
        (b"null", JSON, 400, ("JSON object",)),
        (b'{"dataset": "credit"}', {"content-type": "text/plain"}, 415, ("application/json",)),
        (b'{"dataset": "credit"}', {}, 415, ("application/json",)),
        (
            b'{"dataset": "credit"}',
            {"content-type": "application/json; charset=latin-1"},
            415,
            ("UTF-8",),
        ),
        (b'{"x": "' + b"a" * (5 * 1024 * 1024) + b'"}', JSON, 413, ("65536 bytes",)),
    ],
    ids=[
        "depth-10000",
        "depth-9",
        "not-json",
        "empty",
        "nan",
        "not-utf8",
        "array",
        "string",
        "null",
        "text-plain",
        "no-content-type",
        "latin-1",
        "5MB",
    ],
)
def test_a_bad_body_gets_a_json_4xx_and_changes_nothing(
    request: pytest.FixtureRequest,
    name: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    words: tuple[str, ...],
) -> None:
    function, ctx = _surface(request, name)
    before = _objects(ctx)

    _refused(_post(function, body, headers), status, *words)

    assert _objects(ctx) == before
    assert ctx.bus.published == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", SURFACES)
def test_get_is_a_json_405(request: pytest.FixtureRequest, name: str) -> None:
    function, _ = _surface(request, name)

    _refused(function.client.get("/"), 405, "POST")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataset": DATASET, "request_id": "h3", "force": True}, "force"),
        ({"dataset": 7, "request_id": "h3"}, "dataset"),
        ({"dataset": DATASET, "request_id": ["h3"]}, "request_id"),
        ({"dataset": DATASET, "request_id": "h3", "tune": "maybe"}, "tune"),
        ({"dataset": DATASET, "request_id": "h3", "reason": {"why": 1}}, "reason"),
        ({"dataset": DATASET, "request_id": "h3", "hyperparameters": [1]}, "hyperparameters"),
        (
            {"dataset": DATASET, "request_id": "h3", "hyperparameters": {"a": [1]}},
            "hyperparameters",
        ),
        ({"dataset": DATASET, "request_id": "x" * 200}, "request_id"),
        ({"dataset": DATASET, "request_id": f"run:{WAITING}"}, "request_id"),
        ({"dataset": DATASET, "request_id": "follow-up:x"}, "request_id"),
        ({"dataset": DATASET, "request_id": "release:x"}, "request_id"),
    ],
)
def test_train_http_names_the_bad_field(
    train_http: tuple[FunctionUnderTest, StepContext], body: dict[str, Any], field: str
) -> None:
    function, ctx = train_http
    before = _objects(ctx)

    answer = _refused(_post_json(function, body), 400, field)

    assert answer["field"] == field
    assert _objects(ctx) == before


def test_train_http_refuses_a_bad_dataset_name(
    train_http: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, ctx = train_http
    before = _objects(ctx)

    _refused(_post_json(function, {"dataset": "../Bad Name!"}), 400, "dataset")

    assert _objects(ctx) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"run_id": REJECTED, "reason": "fine by me", "actor": "ana", "force": True}, "force"),
        ({"run_id": 7, "reason": "fine by me", "actor": "ana"}, "run_id"),
        ({"run_id": "../../x", "reason": "fine by me", "actor": "ana"}, "run_id"),
        ({"run_id": "a" * 150, "reason": "fine by me", "actor": "ana"}, "run_id"),
        ({"run_id": REJECTED, "reason": "x" * 5000, "actor": "ana"}, "reason"),
        ({"run_id": REJECTED, "reason": "fine by me", "actor": ["ana"]}, "actor"),
    ],
)
def test_evaluate_http_names_the_bad_field(
    evaluate_http: tuple[FunctionUnderTest, StepContext], body: dict[str, Any], field: str
) -> None:
    function, ctx = evaluate_http
    before = _objects(ctx)

    answer = _refused(_post_json(function, body), 400, field)

    assert answer["field"] == field
    assert _objects(ctx) == before


# ------------------------------------------------------------------ defect 6: limits, 404


def test_a_5mb_reason_is_refused_before_it_is_read(
    train_http: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, ctx = train_http
    before = _objects(ctx)
    body = {"dataset": DATASET, "request_id": "h4", "reason": "x" * (5 * 1024 * 1024)}

    _refused(_post_json(function, body), 413, str(BODY_LIMIT))

    assert _objects(ctx) == before


def test_a_reason_over_1000_characters_is_refused(
    train_http: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, ctx = train_http
    before = _objects(ctx)

    answer = _refused(
        _post_json(function, {"dataset": DATASET, "request_id": "h5", "reason": "x" * 1001}),
        400,
        "reason",
        "1000",
    )

    assert answer["field"] == "reason"
    assert _objects(ctx) == before


def test_300000_hyperparameters_are_refused(
    train_http: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, ctx = train_http
    before = _objects(ctx)
    many = {f"h{index}": 1 for index in range(300_000)}

    _refused(
        _post_json(function, {"dataset": DATASET, "request_id": "h6", "hyperparameters": many}),
        413,
        str(BODY_LIMIT),
    )

    assert _objects(ctx) == before


@pytest.mark.parametrize(
    ("hyperparameters", "words"),
    [
        ({f"h{index}": 1 for index in range(65)}, ("at most 64",)),
        ({"Bad Key!": 1}, ("hyperparameters",)),
        ({"k" * 65: 1}, ("hyperparameters",)),
        ({"optimizer": "x" * 257}, ("hyperparameters", "256")),
    ],
    ids=["65-of-them", "bad-key", "long-key", "long-value"],
)
def test_hyperparameters_are_capped_on_every_entry_point(
    train_http: tuple[FunctionUnderTest, StepContext],
    hyperparameters: dict[str, Any],
    words: tuple[str, ...],
) -> None:
    function, ctx = train_http
    before = _objects(ctx)
    body = {"dataset": DATASET, "request_id": "h7", "hyperparameters": hyperparameters}

    answer = _refused(_post_json(function, body), 400, *words)

    assert answer["field"] == "hyperparameters"
    assert _objects(ctx) == before
    with pytest.raises(ValueError, match="hyperparameters"):  # the model itself refuses it
        TrainRequest.model_validate(body)


def test_an_unknown_dataset_is_a_404_naming_it(
    train_http: tuple[FunctionUnderTest, StepContext], runner: FakeJobRunner
) -> None:
    function, ctx = train_http
    before = _objects(ctx)

    answer = _refused(
        _post_json(function, {"dataset": "nosuchdata", "request_id": "h8"}), 404, "nosuchdata"
    )

    assert answer["dataset"] == "nosuchdata"
    assert _objects(ctx) == before  # no failed run recorded for a typo
    assert ctx.ledger.get(run_id_for_request("nosuchdata", "h8")) is None
    assert runner.submitted == []


def test_a_dataset_with_only_a_config_is_known(
    train_http: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, ctx = train_http
    ctx.artifacts.write(DatasetPaths("fresh").pipeline_config, b"{}\n")

    response = _post_json(function, {"dataset": "fresh", "request_id": "h9"})

    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["run_id"] == run_id_for_request("fresh", "h9")
    assert answer["status"] == "failed"
    assert "no transformed data" in answer["error"]


def test_a_good_request_answers_with_its_run_id(
    train_http: tuple[FunctionUnderTest, StepContext], runner: FakeJobRunner
) -> None:
    function, ctx = train_http
    body = {
        "dataset": DATASET,
        "request_id": "nightly-1",
        "reason": "r" * 1000,
        "hyperparameters": {"shrinkage": 0.1, "num_leaves": 15},
    }

    first = _post_json(function, body)
    second = _post_json(function, body)

    run_id = run_id_for_request(DATASET, "nightly-1")
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {
        "run_id": run_id,
        "request_id": "nightly-1",
        "dataset": DATASET,
        "status": "succeeded",
    }
    assert second.status_code == 200
    assert second.get_json()["status"] == "duplicate"
    assert second.get_json()["run_id"] == run_id
    assert [spec.run_id for spec in runner.submitted] == [run_id]
    stored = ctx.ledger.get(run_id)
    assert stored is not None
    assert stored.trigger.reason == "r" * 1000


def test_hyperparameters_the_model_family_does_not_read_fail_the_run_clearly(
    train_http: tuple[FunctionUnderTest, StepContext], runner: FakeJobRunner
) -> None:
    function, _ = train_http
    body = {"dataset": DATASET, "request_id": "h10", "hyperparameters": {"hidden_units": 32}}

    response = _post_json(function, body)

    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["status"] == "failed"
    assert "model boosted_trees does not read hidden_units" in answer["error"]
    assert runner.submitted == []


def test_a_request_id_defaults_to_a_new_one(
    train_http: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, _ = train_http

    answer = _post_json(function, {"dataset": DATASET}).get_json()

    assert answer["run_id"] == run_id_for_request(DATASET, answer["request_id"])


def test_a_null_request_id_also_defaults_to_a_new_one(
    train_http: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, _ = train_http

    response = _post_json(function, {"dataset": DATASET, "request_id": None})

    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["run_id"] == run_id_for_request(DATASET, answer["request_id"])


def test_a_huge_bad_key_is_not_echoed_back(
    train_http: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, _ = train_http
    body = {"dataset": DATASET, "request_id": "h10", "hyperparameters": {"K" * 60_000: 1}}

    answer = _refused(_post_json(function, body), 400, "hyperparameters")

    assert len(answer["error"]) <= 1_000


class _ChunkedRequest:
    """A POST whose body arrives without a Content-Length (chunked), a few bytes a read."""

    method = "POST"
    mimetype = "application/json"
    mimetype_params: dict[str, str] = {}  # noqa: RUF012
    content_length = None

    def __init__(self, body: bytes) -> None:
        self.stream = io.BytesIO(body)
        self._read = self.stream.read
        self.stream.read = self._few  # type: ignore[method-assign]

    def _few(self, size: int = -1) -> bytes:
        return self._read(min(size, 1000) if size >= 0 else 1000)


def test_a_chunked_body_is_capped_too() -> None:
    from cascade.core.json_body import BodyError, read_json_object

    big = _ChunkedRequest(b'{"reason": "' + b"x" * (BODY_LIMIT + 10) + b'"}')
    with pytest.raises(BodyError, match="larger than") as refused:
        read_json_object(big)
    assert refused.value.status == 413
    assert big.stream.read() == b""  # the rest was drained

    small = _ChunkedRequest(b'{"dataset": "' + b"x" * 5000 + b'"}')
    assert read_json_object(small) == {"dataset": "x" * 5000}
