"""transform: a message on the data-validated topic."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.core.messages import DataValidated
from cascade.steps.adapter import run_pubsub_event
from cascade.steps.transform import handle_data_validated


@functions_framework.cloud_event
def on_data_validated(event: CloudEvent) -> None:
    run_pubsub_event(event, DataValidated, handle_data_validated)
