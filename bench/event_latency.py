"""Event latency of the local cloud: upload -> function invoked, publish -> function invoked.

Starts a private local cloud (own ports and state folder) whose topology has two probe
functions: one on the landing bucket's finalize events, one on a topic. Each probe
writes the moment an event arrived. Events are sent one at a time so each latency is
measured alone. The baseline, in the same run: the same CloudEvent POSTed straight to
the probe function (what a function invocation costs without storage, Pub/Sub or the
router).

    .venv/bin/python bench/event_latency.py [--events 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from cascade.core.grants import INVOKER_ACCOUNT, service_account_email
from cascade.core.topology import load_topology
from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient
from cascade.localcloud.eventarc import message_published_event
from cascade.localcloud.id_tokens import bearer_header
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.router import function_urls

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "event_latency.json"


def bench_topology(path: Path) -> Path:
    document = yaml.safe_load((REPO_ROOT / "infra" / "topology.yaml").read_text())
    probe = {"source": "bench/functions/probe", "entry_point": "probe", "signature": "cloudevent"}
    document["topics"] = {**document["topics"], "bench-probe": {"description": "bench"}}
    document["functions"] = {
        "probe-storage": {**probe, "trigger": {"type": "storage", "bucket": "landing"}},
        "probe-topic": {**probe, "trigger": {"type": "topic", "topic": "bench-probe"}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def wait_for_arrival(log: Path, key: str, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                if entry["key"] == key:
                    return float(entry["at"])
        time.sleep(0.002)
    raise TimeoutError(f"event {key} never arrived")


def summarize(latencies_s: list[float]) -> dict[str, float]:
    ms = sorted(value * 1000 for value in latencies_s)
    return {
        "events": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(ms[-1], 2),
    }


def measure(
    client: LocalCloudClient, local: LocalCloudSettings, events: int, logs: Path
) -> dict[str, Any]:
    publisher = client.bus._publisher
    topic = client.settings.topic_path("bench-probe")
    url = function_urls(local, load_topology(local.topology_file))["probe-topic"]
    session = requests.Session()
    # As the router posts: the invoker account's ID token, which the function's check wants.
    session.headers.update(
        bearer_header(
            local.id_token_key_file, url, service_account_email(INVOKER_ACCOUNT, client.settings)
        )
    )
    upload, publish, direct = [], [], []
    for index in range(events + 5):  # the first 5 warm up and are not counted
        name = f"bench/{uuid.uuid4().hex}.csv"
        sent = time.time()
        client.upload(name, b"a,b\n1,2\n")
        upload.append(wait_for_arrival(logs / "probe-storage.jsonl", name) - sent)

        key = uuid.uuid4().hex
        sent = time.time()
        publisher.publish(topic, b"{}", key=key).result(timeout=30)
        publish.append(wait_for_arrival(logs / "probe-topic.jsonl", key) - sent)

        key = uuid.uuid4().hex
        event = message_published_event(
            project=client.settings.project,
            topic_id="bench-probe",
            subscription_id="direct",
            message_id=key,
            data=b"{}",
            attributes={"key": key},
            publish_time=datetime.now(UTC),
        )
        sent = time.time()
        session.post(url, headers=event.headers, data=event.body, timeout=30).raise_for_status()
        direct.append(wait_for_arrival(logs / "probe-topic.jsonl", key) - sent)
        del index
    return {
        "upload_to_function": summarize(upload[5:]),
        "publish_to_function": summarize(publish[5:]),
        "baseline_direct_post": summarize(direct[5:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as tmp:
        root = Path(tmp)
        logs = root / "arrivals"
        logs.mkdir()
        local = LocalCloudSettings(
            state_dir=root / "state",
            repo_root=REPO_ROOT,
            topology_file=bench_topology(root / "topology.yaml"),
            pubsub_port=18085,
            gcs_port=19023,
            router_port=18790,
            functions_base_port=18800,
        ).absolute()
        os.environ["CASCADE_BENCH_DIR"] = str(logs)
        control.up(local)
        try:
            results = measure(LocalCloudClient(local.runtime_settings()), local, args.events, logs)
        finally:
            control.down(local)
    for path in ("upload_to_function", "publish_to_function"):
        results[path]["p50_vs_direct"] = round(
            results[path]["p50_ms"] / results["baseline_direct_post"]["p50_ms"], 1
        )
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    results["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
