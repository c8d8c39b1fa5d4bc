"""evaluate: a message on model-trained, or a training-job event on job-events."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.function_adapter import run_pubsub_event
from cascade.messages import JobEvent, ModelTrained
from cascade.steps.evaluate import handle_job_event, handle_model_trained


@functions_framework.cloud_event
def on_model_trained(event: CloudEvent) -> None:
    run_pubsub_event(event, ModelTrained, handle_model_trained)


@functions_framework.cloud_event
def on_job_event(event: CloudEvent) -> None:
    run_pubsub_event(event, JobEvent, handle_job_event)
