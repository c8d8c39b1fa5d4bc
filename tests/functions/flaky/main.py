"""Test-only function: fails the first ``fail_times`` deliveries of each message.

``fail_times`` is a message attribute. Every attempt is appended to
``<CASCADE_TEST_RECORD_DIR>/flaky/<message id>.jsonl`` with its arrival time, so tests
can check the retry count, the backoff between attempts and dead-lettering.
"""

import json
import os
import time
from pathlib import Path

import functions_framework
from cloudevents.http import CloudEvent

RECORD_DIR = Path(os.environ["CASCADE_TEST_RECORD_DIR"]) / "flaky"


@functions_framework.cloud_event
def flaky(event: CloudEvent) -> None:
    message = event.data["message"]
    log = RECORD_DIR / f"{message['messageId']}.jsonl"
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    with log.open("a") as attempts:
        attempts.write(json.dumps({"at": time.time()}) + "\n")
    attempt = len(log.read_text().splitlines())
    if attempt <= int(message.get("attributes", {}).get("fail_times", "0")):
        raise RuntimeError(f"failing on purpose, attempt {attempt}")
