"""Benchmark probe: notes the moment each CloudEvent arrives, then returns at once."""

import json
import os
import time
from pathlib import Path

import functions_framework
from cloudevents.http import CloudEvent

LOG = Path(os.environ["CASCADE_BENCH_DIR"]) / f"{os.environ['CASCADE_FUNCTION_NAME']}.jsonl"


@functions_framework.cloud_event
def probe(event: CloudEvent) -> None:
    arrived = time.time()
    data = event.data
    key = data["name"] if "name" in data else data["message"]["attributes"]["key"]
    with LOG.open("a") as log:
        log.write(json.dumps({"key": key, "at": arrived}) + "\n")
