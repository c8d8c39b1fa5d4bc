"""Streaming ingestion: publish -> file-landed latency at a fixed record rate.

The real Pub/Sub emulator and fake-gcs-server are started (as the local cloud starts
them, on free loopback ports); the topology's ``credit`` stream is provisioned as the
local cloud's gcs-subscriber provisions it (schema, topic with JSON schema settings,
Cloud Storage subscription); records are published at ``--rate`` records/s for
``--seconds`` with the batching publisher of ``cascade publish-records``, and the
gcs-subscriber's own writer (``StreamWriter``) pulls, batches by the stream's thresholds
and uploads each Avro file to fake-gcs-server, acknowledging after the upload.

Latency of a record: from the moment its publish was called to the moment the upload of
the file holding it returned (the object is finalized then, and Cloud Storage's
finalize notification would start validate). Reported per file (p50, p95 of its
records) and over all records. The batch timer runs at ``max_duration`` times the local
time scale ``--duration-scale`` (the stand-in's ``stream_duration_scale``; the
subscription itself keeps its legal ``max_duration_s``); at 1,000 records/s a file of
``max_messages`` (1,000) fills in about a second, before any timer.

What it does not include: the router's notification delivery and validate
(``bench/event_latency.py``), and Google's own writer (whose batching is the same rules
but whose latency is Google's).

    .venv/bin/python bench/scale_streaming.py [--rate 1000 --seconds 10 --duration-scale 0.05]
    .venv/bin/python bench/scale.py --streaming [same options]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "scale_streaming.json"
DATASET = "credit"


@contextlib.contextmanager
def _emulators(state_dir: Path) -> Iterator[Any]:
    from google.api_core import exceptions as gexc

    from cascade.core.clients import make_publisher, make_storage_client, make_subscriber
    from cascade.core.grants import IDENTITY_ENV
    from cascade.core.topology import load_topology
    from cascade.localcloud.components import gcs_spec, pubsub_spec
    from cascade.localcloud.local_settings import LocalCloudSettings
    from cascade.localcloud.processes import ManagedProcess, free_loopback_port
    from cascade.localcloud.pubsub_admin import provision_pubsub

    local = LocalCloudSettings(
        state_dir=state_dir,
        repo_root=REPO_ROOT,
        pubsub_port=free_loopback_port(),
        gcs_port=free_loopback_port(),
    ).absolute()
    env = {k: v for k, v in os.environ.items() if k != IDENTITY_ENV}
    processes = [ManagedProcess(pubsub_spec(local, env)), ManagedProcess(gcs_spec(local, env))]
    try:
        for process in processes:
            process.start()
            process.wait_ready(local.ready_timeout_s)
        settings = local.runtime_settings()
        provision_pubsub(
            load_topology(REPO_ROOT / "infra" / "topology.yaml"),
            settings,
            local.notifications_topic,
            make_publisher(settings),
            make_subscriber(settings),
        )
        storage = make_storage_client(settings)
        for bucket in (settings.landing_bucket, settings.artifacts_bucket):
            with contextlib.suppress(gexc.Conflict):
                storage.create_bucket(bucket)
        yield local
    finally:
        for process in reversed(processes):
            process.stop()


def _records(count: int) -> list[bytes]:
    from cascade.cli.sample_data import sample_csv

    header, *lines = sample_csv(count, seed=5).decode().splitlines()
    names = header.split(",")
    integers = {"age", "term_months", "credit_score", "num_late_payments", "defaulted"}
    out = []
    for line in lines:
        row: dict[str, object] = dict(zip(names, line.split(","), strict=True))
        for name in names:
            if name in integers:
                row[name] = int(str(row[name]))
            elif name in ("income", "loan_amount"):
                row[name] = float(str(row[name]))
        out.append(json.dumps(row, separators=(",", ":")).encode())
    return out


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(rate: float, seconds: float, duration_scale: float) -> dict[str, Any]:
    from cascade.cli.publish_records import stream_publisher
    from cascade.core.clients import make_publisher, make_storage_client, make_subscriber
    from cascade.core.streams import stream_names
    from cascade.core.topology import load_topology
    from cascade.localcloud.gcs_subscriber import StreamWriter, _schema_client, provision_streams

    total = int(rate * seconds)
    records = _records(total)
    with (
        tempfile.TemporaryDirectory(prefix="scale-streaming-") as root,
        _emulators(Path(root)) as local,
    ):
        settings = local.runtime_settings()
        topology = load_topology(REPO_ROOT / "infra" / "topology.yaml")
        subscriber = make_subscriber(settings)
        [(spec, names)] = [
            pair
            for pair in provision_streams(
                topology,
                REPO_ROOT / "infra",
                settings,
                _schema_client(settings),
                make_publisher(settings),
                subscriber,
            )
            if pair[1].dataset == DATASET
        ]
        landing = make_storage_client(settings).bucket(settings.landing_bucket)
        landed_at: dict[str, float] = {}
        file_sequences: dict[str, list[int]] = {}
        writer: StreamWriter | None = None

        def write(name: str, data: bytes) -> None:
            landing.blob(name).upload_from_string(data, content_type="application/avro")
            landed_at[name] = time.monotonic()
            assert writer is not None
            file_sequences[name] = [int(m.attributes["seq"]) for m in writer.batch.messages]

        writer = StreamWriter(
            spec, names, settings.project, subscriber, write, duration_scale=duration_scale
        )
        stopping = threading.Event()

        def pull() -> None:
            # Until every message is in a file: the tail waits for the (scaled) timer.
            assert writer is not None
            while writer.messages_written < total and not stopping.is_set():
                writer.poll()
                writer.tick()

        puller = threading.Thread(target=pull, daemon=True)
        puller.start()
        publisher = stream_publisher(settings)
        topic = stream_names(DATASET, settings.topic_prefix).topic_path(settings.project)
        sent_at: list[float] = [0.0] * total
        futures = []
        start = time.monotonic()
        for seq, data in enumerate(records):
            due = start + seq / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent_at[seq] = time.monotonic()
            futures.append(publisher.publish(topic, data, seq=str(seq)))
        for future in futures:
            future.result(timeout=60)
        publish_s = time.monotonic() - start
        puller.join(timeout=max(60.0, spec.max_duration_s * duration_scale * 2))
        stopping.set()
        files = []
        everything: list[float] = []
        for name, sequences in sorted(file_sequences.items(), key=lambda item: landed_at[item[0]]):
            latencies = [landed_at[name] - sent_at[seq] for seq in sequences]
            everything += latencies
            files.append(
                {
                    "records": len(sequences),
                    "p50_s": round(_percentile(latencies, 0.5), 3),
                    "p95_s": round(_percentile(latencies, 0.95), 3),
                }
            )
    return {
        "rate_per_s": rate,
        "published": total,
        "publish_s": round(publish_s, 2),
        "achieved_rate_per_s": round(total / publish_s, 1),
        "landed": sum(file["records"] for file in files),
        "files": len(files),
        "thresholds": {
            "max_messages": spec.max_messages,
            "max_bytes": spec.max_bytes,
            "max_duration_s": spec.max_duration_s,
            "duration_scale": duration_scale,
            "timed_at_s": spec.max_duration_s * duration_scale,
        },
        "latency_p50_s": round(statistics.median(everything), 3) if everything else None,
        "latency_p95_s": round(_percentile(everything, 0.95), 3) if everything else None,
        "per_file": files,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="records published a second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--duration-scale",
        type=float,
        default=0.05,
        help="the stand-in's max_duration time scale (local only; 1: as the service)",
    )
    args, _ = parser.parse_known_args()
    sys.path.insert(0, str(REPO_ROOT))
    result = run(args.rate, args.seconds, args.duration_scale)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "streaming": result,
    }
    print(json.dumps(record, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
