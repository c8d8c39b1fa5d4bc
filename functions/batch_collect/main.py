"""batch-collect: a scheduled sweep that collects finished Vertex AI batch prediction jobs."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.steps.adapter import run_cloudevent
from cascade.steps.batch_collect import handle_batch_collect_request


@functions_framework.cloud_event
def on_batch_collect_request(event: CloudEvent) -> None:
    run_cloudevent(event, handle_batch_collect_request)
