"""report: a run ended (run-ended); render its HTML report beside the run."""

import functions_framework
from cloudevents.http import CloudEvent

from cascade.core.messages import RunEnded
from cascade.steps.adapter import run_pubsub_event
from cascade.steps.report import render_ended_run


@functions_framework.cloud_event
def on_run_ended(event: CloudEvent) -> None:
    run_pubsub_event(event, RunEnded, render_ended_run)
