"""dead-letters: a message on the dead-letter topic (one that exhausted its deliveries)."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.steps.adapter import run_cloudevent
from cascade.steps.dead_letter import handle_dead_letter_data


@functions_framework.cloud_event
def on_dead_letter(event: CloudEvent) -> None:
    run_cloudevent(event, handle_dead_letter_data)
