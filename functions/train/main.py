"""train: a message on the train-requests topic, or an authenticated POST."""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from cascade.core.messages import TrainRequest
from cascade.steps.adapter import run_http_train_request, run_pubsub_event
from cascade.steps.train import handle_train_request


@functions_framework.cloud_event
def on_train_request(event: CloudEvent) -> None:
    run_pubsub_event(event, TrainRequest, handle_train_request)


@functions_framework.http
def on_http_train_request(request: flask.Request) -> tuple[dict[str, object], int]:
    return run_http_train_request(request, handle_train_request)
