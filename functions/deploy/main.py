"""deploy: a message on the model-blessed topic."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.core.messages import ModelBlessed
from cascade.steps.adapter import run_pubsub_event
from cascade.steps.deploy import handle_model_blessed


@functions_framework.cloud_event
def on_model_blessed(event: CloudEvent) -> None:
    run_pubsub_event(event, ModelBlessed, handle_model_blessed)
