"""validate: a data file was finalized in the landing bucket (Eventarc storage trigger)."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.core.events import StorageObjectEvent
from cascade.steps.adapter import run_cloudevent
from cascade.steps.validate import handle_object_finalized


@functions_framework.cloud_event
def on_object_finalized(event: CloudEvent) -> None:
    run_cloudevent(
        event,
        lambda ctx, attributes, data: handle_object_finalized(
            ctx, StorageObjectEvent.from_cloudevent(attributes, data)
        ),
    )
