"""review: an authenticated POST that releases or discards a quarantined file (audited)."""

import flask
import functions_framework

from cascade.steps.adapter import context
from cascade.steps.review_http import handle_http_review


@functions_framework.http
def on_http_review(request: flask.Request) -> tuple[dict[str, object], int]:
    return handle_http_review(context(), request)
