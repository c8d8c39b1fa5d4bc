"""batch-predict: a message on the batch-predict-requests topic."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.core.messages import BatchPredictRequest
from cascade.steps.adapter import run_pubsub_event
from cascade.steps.batch_predict import handle_batch_predict_request


@functions_framework.cloud_event
def on_batch_predict_request(event: CloudEvent) -> None:
    run_pubsub_event(event, BatchPredictRequest, handle_batch_predict_request)
