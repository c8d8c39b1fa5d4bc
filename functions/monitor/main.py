"""monitor: a message on the data-validated topic (beside transform): the model serving
the dataset is scored on the accepted file (continued evaluation)."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.core.messages import DataValidated
from cascade.steps.adapter import run_pubsub_event
from cascade.steps.monitor import handle_data_validated


@functions_framework.cloud_event
def on_data_validated_monitor(event: CloudEvent) -> None:
    run_pubsub_event(event, DataValidated, handle_data_validated)
