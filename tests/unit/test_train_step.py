from __future__ import annotations

from cascade.context import StepContext
from cascade.messages import ModelTrained, TrainRequest
from cascade.runs import run_id_for_request
from cascade.steps.train import handle_train_request
from cascade.testing import RecordingBus


def test_request_without_id_is_keyed_by_its_message_id(step_context: StepContext) -> None:
    request = TrainRequest(dataset="credit", reason="cloud scheduler")

    handle_train_request(step_context, request, event_id="4242")
    handle_train_request(step_context, request, event_id="4242")  # redelivered

    run = step_context.ledger.get(run_id_for_request("credit", "message:4242"))
    assert run is not None
    assert run.trigger.request_id == "message:4242"
    assert run.steps["train"].attempts == 1
    assert isinstance(step_context.bus, RecordingBus)
    assert [type(m) for m in step_context.bus.published] == [ModelTrained]


def test_request_from_transform_continues_the_upload_run(step_context: StepContext) -> None:
    request = TrainRequest(dataset="credit", request_id="run:credit-abc", run_id="credit-abc")

    handle_train_request(step_context, request, event_id="1")

    assert step_context.ledger.get("credit-abc") is not None
