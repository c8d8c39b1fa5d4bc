"""Test-only function: records every CloudEvent it receives (attributes and data).

The integration tests add it to the topology beside the real functions, so they can
compare what the event router delivers, as functions-framework parsed it, with
Google Cloud's golden payloads.
"""

import json
import os
import uuid
from pathlib import Path

import functions_framework
from cloudevents.http import CloudEvent

RECORD_DIR = Path(os.environ["CASCADE_TEST_RECORD_DIR"]) / os.environ["CASCADE_FUNCTION_NAME"]


@functions_framework.cloud_event
def record(event: CloudEvent) -> None:
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    attributes = {key: str(value) for key, value in event.get_attributes().items()}
    entry = {"attributes": attributes, "data": event.data}
    (RECORD_DIR / f"{uuid.uuid4().hex}.json").write_text(json.dumps(entry))
