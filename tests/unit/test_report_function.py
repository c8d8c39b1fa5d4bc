"""The report function: a run's end (run-ended) becomes runs/<run_id>/report.html.

Driven through the function's real main.py under functions-framework (the push body
Pub/Sub sends), over the in-memory context of the unit tests.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from cascade.core.context import StepContext
from cascade.core.errors import TransientError
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, RunEnded
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord, Trigger
from cascade.core.topology import load_topology
from cascade.steps.runner import StepOutcome, execute_step
from tests.function_client import REPO_ROOT, FunctionUnderTest, golden, load_function

SPEC = load_topology(REPO_ROOT / "infra" / "topology.yaml").functions["report"]
RUN_ID = "credit-0123456789abcdef"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _push(function: FunctionUnderTest, data: bytes, attributes: dict[str, str]) -> int:
    sample = golden("pubsub_push_request.json")
    body = sample["body"]
    body["message"]["data"] = base64.b64encode(data).decode()
    body["message"]["attributes"] = attributes
    body["message"]["publishTime"] = NOW.isoformat().replace("+00:00", "Z")
    return function.post(sample["path"], sample["headers"], json.dumps(body).encode())


def _announce(function: FunctionUnderTest, message: RunEnded) -> int:
    return _push(function, message.model_dump_json().encode(), message.attributes())


def _ended_run(ctx: StepContext, state: str = "rejected") -> None:
    """A run whose evaluate step ended it, as execute_step records it."""
    run = RunRecord(
        run_id=RUN_ID,
        dataset="credit",
        trigger=Trigger(kind="object", uri="gs://landing/credit/a.csv"),
        created_at=NOW,
        updated_at=NOW,
    )
    execute_step(
        ctx,
        run=run,
        step="evaluate",
        owner="event-1",
        body=lambda claim, log: StepOutcome(
            state="rejected",
            summary="auc 0.6 < 0.7",
            run_state=state,  # type: ignore[arg-type]
        ),
    )
    assert isinstance(ctx.bus, RecordingBus)
    ctx.bus.published.clear()


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch) -> tuple[FunctionUnderTest, StepContext]:
    return load_function(SPEC, monkeypatch, NOW)


def test_a_run_end_writes_the_run_report_beside_the_run(
    report: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, ctx = report
    _ended_run(ctx)

    status = _announce(function, RunEnded(dataset="credit", run_id=RUN_ID, state="rejected"))

    assert status == 200
    stored = ctx.artifacts.read(RunPaths(RUN_ID).report)
    assert stored is not None
    html = stored.data.decode()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert RUN_ID in html
    assert "rejected" in html
    assert "auc 0.6 &lt; 0.7" in html or "auc 0.6 < 0.7" in html
    assert ctx.bus.published == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("changed", [None, "run.json", "a step's result"])
def test_a_repeated_end_renders_the_report_again_only_when_the_run_changed(
    report: tuple[FunctionUnderTest, StepContext], changed: str | None
) -> None:
    function, ctx = report
    _ended_run(ctx)
    message = RunEnded(dataset="credit", run_id=RUN_ID, state="rejected")
    assert _announce(function, message) == 200
    first = ctx.artifacts.stat(RunPaths(RUN_ID).report)
    assert first is not None

    if changed == "run.json":
        ctx.ledger.update(RUN_ID, lambda run: setattr(run, "error", "failed from outside"))
    elif changed is not None:
        result = ctx.artifacts.read(RunPaths(RUN_ID).result("evaluate"))
        assert result is not None
        ctx.artifacts.write(RunPaths(RUN_ID).result("evaluate"), result.data)
    assert _announce(function, message) == 200

    again = ctx.artifacts.read(RunPaths(RUN_ID).report)
    assert again is not None
    assert (again.generation != first.generation) == (changed is not None)
    if changed == "run.json":
        assert "failed from outside" in again.data.decode()


def test_the_end_of_a_run_without_a_record_is_acknowledged_and_alerted(
    report: tuple[FunctionUnderTest, StepContext],
) -> None:
    function, ctx = report

    status = _announce(function, RunEnded(dataset="credit", run_id=RUN_ID, state="failed"))

    assert status == 200  # never retried: no retry makes the record appear
    assert ctx.artifacts.read(RunPaths(RUN_ID).report) is None
    [alert] = ctx.bus.published  # type: ignore[attr-defined]
    assert isinstance(alert, Alert)
    assert alert.severity == "ERROR"
    assert RUN_ID in alert.summary


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"dataset": "credit", "run_id": "../../etc/passwd", "state": "failed"}, "run id"),
        ({"dataset": "credit", "run_id": "runs/x/report.html", "state": "failed"}, "run id"),
        ({"dataset": "../credit", "run_id": RUN_ID, "state": "failed"}, "dataset"),
        ({"dataset": "credit", "run_id": RUN_ID, "state": "running"}, "state"),
        ({"dataset": "credit", "run_id": RUN_ID}, "state"),
        ({"dataset": "credit", "run_id": RUN_ID, "state": "failed", "path": "/tmp"}, "path"),
        ({"dataset": "credit", "run_id": "x" * 500, "state": "failed"}, "run id"),
    ],
)
def test_a_hostile_announcement_writes_nothing_and_is_never_retried(
    report: tuple[FunctionUnderTest, StepContext], body: dict[str, object], named: str
) -> None:
    function, ctx = report
    _ended_run(ctx)
    before = sorted(ctx.artifacts.list_names(""))

    status = _push(function, json.dumps(body).encode(), {"message_type": "RunEnded"})

    assert status == 200
    assert sorted(ctx.artifacts.list_names("")) == before
    [alert] = ctx.bus.published  # type: ignore[attr-defined]
    assert isinstance(alert, Alert)
    assert named in alert.summary


def test_a_transient_storage_error_is_retried(
    report: tuple[FunctionUnderTest, StepContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    function, ctx = report
    _ended_run(ctx)

    def unavailable(*args: object, **kwargs: object) -> None:
        raise TransientError("503 Service Unavailable")

    monkeypatch.setattr(ctx.artifacts, "write", unavailable)

    status = _announce(function, RunEnded(dataset="credit", run_id=RUN_ID, state="rejected"))

    assert status >= 500  # Pub/Sub redelivers; after its attempts, the dead letter
    assert ctx.bus.published == []  # type: ignore[attr-defined]


def test_an_old_announcement_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    function, ctx = load_function(SPEC, monkeypatch, NOW + timedelta(days=2))
    _ended_run(ctx)

    status = _announce(function, RunEnded(dataset="credit", run_id=RUN_ID, state="rejected"))

    assert status == 200
    assert ctx.artifacts.read(RunPaths(RUN_ID).report) is None
