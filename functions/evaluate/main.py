"""evaluate: a message on model-trained, or an authenticated POST that force-blesses a run
(the audited override). Job events have their own source (functions/job_events): they
finish Beam steps too, which read data, and evaluate installs none of that."""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from cascade.core.messages import ModelTrained
from cascade.steps.adapter import context, run_pubsub_event
from cascade.steps.bless_http import handle_http_bless
from cascade.steps.evaluate import handle_model_trained


@functions_framework.cloud_event
def on_model_trained(event: CloudEvent) -> None:
    run_pubsub_event(event, ModelTrained, handle_model_trained)


@functions_framework.http
def on_http_bless(request: flask.Request) -> tuple[dict[str, object], int]:
    return handle_http_bless(context(), request)
