"""A transform's snapshot of a dataset with many accepted files: reads one at a time
(the baseline, ``READ_CONCURRENCY`` set to 1) against reads several at a time (the
code), on the same objects in the same run.

The snapshot reads each accepted file's manifest and looks up its landed generation:
two round trips a file. Storage is fake-gcs-server through the real storage client;
``--latency-ms`` adds a wait before each request, as a stand-in for Cloud Storage's round
trip from a function (0 measures the local machine alone). Rounds alternate the modes;
the figures are medians.

    .venv/bin/python bench/snapshot_reads.py [--files 500 --rounds 3 --latency-ms 0 20]
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.auth.credentials import AnonymousCredentials

import cascade.core.store as store_module
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore, new_storage_client
from cascade.localcloud.components import standalone_fake_gcs
from cascade.transform.snapshot import GcsObjectOpener, build_snapshot
from cascade.validation.manifest import AcceptedFile

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "snapshot_reads.json"
DATASET = "credit"
START_DEADLINE_S = 20.0


def _client(endpoint: str, latency_s: float) -> Any:
    client = new_storage_client(
        project="local",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )
    if latency_s:
        session = client._http
        send = session.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            time.sleep(latency_s)  # the network's round trip, modelled
            return send(method, url, *args, **kwargs)

        session.request = request
    return client


def _populate(endpoint: str, files: int) -> None:
    client = _client(endpoint, 0.0)
    artifacts, landing = ArtifactStore(client, "artifacts"), ArtifactStore(client, "landing")
    paths = DatasetPaths(DATASET)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for index in range(files):
        name = f"{DATASET}/day-{index:05d}.csv"
        generation = landing.write(name, b"amount,city\n1.5,a\n")
        assert generation is not None
        manifest = AcceptedFile(
            file_id=f"f{index:05d}",
            run_id=f"r{index:05d}",
            uri=f"gs://landing/{name}",
            generation=generation,
            num_examples=1,
            stats_uri=f"gs://artifacts/runs/r{index:05d}/stats.pb",
            schema_uri="gs://artifacts/schema.pbtxt",
            accepted_at=start + timedelta(seconds=index),
        )
        artifacts.write_json(paths.accepted_manifest(manifest.file_id), manifest)


def _snapshot_s(endpoint: str, latency_s: float, concurrency: int, files: int) -> float:
    client = _client(endpoint, latency_s)
    artifacts = ArtifactStore(client, "artifacts")
    opener = GcsObjectOpener(lambda bucket: ArtifactStore(client, bucket))
    store_module.READ_CONCURRENCY = concurrency
    began = time.perf_counter()
    snapshot = build_snapshot(
        artifacts, opener, dataset=DATASET, run_id="bench", now=datetime.now(UTC)
    )
    elapsed = time.perf_counter() - began
    assert len(snapshot.files) == files
    assert not snapshot.skipped
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    args = parser.parse_args()
    concurrent = store_module.READ_CONCURRENCY
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="cascade-bench-snapshot-") as work,
        standalone_fake_gcs(Path(work), ("landing", "artifacts")) as endpoint,
    ):
        _populate(endpoint, args.files)
        for latency_ms in args.latency_ms:
            times: dict[int, list[float]] = {1: [], concurrent: []}
            for _ in range(args.rounds):
                for concurrency in (1, concurrent):
                    times[concurrency].append(
                        _snapshot_s(endpoint, latency_ms / 1000, concurrency, args.files)
                    )
            one, several = statistics.median(times[1]), statistics.median(times[concurrent])
            row = {
                "latency_ms": latency_ms,
                "one_at_a_time_s": round(one, 3),
                f"{concurrent}_at_a_time_s": round(several, 3),
                "ratio": round(several / one, 3),
                "rounds_s": {str(key): [round(t, 3) for t in ts] for key, ts in times.items()},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "files": args.files,
                "rounds": args.rounds,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
