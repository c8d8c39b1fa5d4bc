"""reconcile: a scheduled sweep that resumes work an event loss or a crash left unfinished."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.steps.adapter import run_cloudevent
from cascade.steps.reconcile import handle_reconcile_request


@functions_framework.cloud_event
def on_reconcile_request(event: CloudEvent) -> None:
    run_cloudevent(event, handle_reconcile_request)
