"""extract: a dataset's BigQuery source, incrementally, into the landing bucket."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.steps.adapter import run_cloudevent
from cascade.steps.extract import handle_extract_request


@functions_framework.cloud_event
def on_extract_request(event: CloudEvent) -> None:
    run_cloudevent(event, handle_extract_request)
