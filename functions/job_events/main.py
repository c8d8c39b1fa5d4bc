"""evaluate-job-events: a job's state change on job-events (a Vertex AI training or tuning
job's failure or end, a Beam job's end), which finishes the step that waits on it."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.steps.adapter import run_cloudevent
from cascade.steps.training_job import handle_job_event_data


@functions_framework.cloud_event
def on_job_event(event: CloudEvent) -> None:
    run_cloudevent(event, handle_job_event_data)
