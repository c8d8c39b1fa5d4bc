"""Console page-load benchmark: median server time per page with 1,000 runs in the
artifacts bucket, beside listing the runs without the run index, in the same run.

    .venv/bin/python bench/console_pages.py      # writes bench/results/console_pages.json

fake-gcs-server (in memory) behind the local cloud's GCS front, as the local cloud runs
them. Each page is measured twice on the same data: the console reading fake-gcs-server
directly (the storage's own cost) and through the front (what ``cascade console`` sees
locally: the front, a Python reverse proxy modelling Cloud Storage's write limit, adds
its own time to every request). The console (``cascade.console.create_app`` with the
clients ``cascade console`` builds) is served by uvicorn on 127.0.0.1; one keep-alive
client on loopback times each request to its last byte. 1,000 runs over 5 datasets
(mixed states and triggers), each with its run.json (six steps) and its two index
entries, written as the steps write them. Pages: the runs list (first page, a dataset's
page, a state filter, a trigger filter, the sixth page through page tokens), the JSON
the list polls, and a run's page (the run report's collection of its artifacts).
Baseline: what a page would cost without the index, listing ``runs/`` and reading every
run.json to sort them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from cascade.console import Caller, create_app  # noqa: E402
from cascade.console.wiring import console_config  # noqa: E402
from cascade.core.clients import make_storage_client  # noqa: E402
from cascade.core.paths import RunPaths  # noqa: E402
from cascade.core.run_index import record_run_created  # noqa: E402
from cascade.core.runs import (  # noqa: E402
    RunRecord,
    StepRecord,
    Trigger,
    run_id_for_object,
    run_id_for_request,
)
from cascade.core.settings import Settings  # noqa: E402
from cascade.core.store import ArtifactStore  # noqa: E402
from cascade.localcloud.components import fake_gcs_binary  # noqa: E402
from tests.console.server import serving  # noqa: E402
from tests.unit.gcs_front_process import free_port, wait_ok  # noqa: E402

CALLER = lambda request: Caller("bench@local")  # noqa: E731
RESULTS = REPO_ROOT / "bench" / "results" / "console_pages.json"
DATASETS = ["credit", "churn", "fraud", "demand", "returns"]
STATES = ["succeeded"] * 14 + ["rejected"] * 3 + ["failed"] * 2 + ["running"]
STEPS = ["validate", "transform", "train", "training_job", "evaluate", "deploy"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_run(number: int) -> RunRecord:
    dataset = DATASETS[number % len(DATASETS)]
    created = T0 + timedelta(minutes=7 * number)
    if number % 5 == 4:
        run_id = run_id_for_request(dataset, f"bench-{number}")
        trigger = Trigger(kind="request", request_id=f"bench-{number}", reason="scheduled")
    else:
        name = f"{dataset}/day-{number}.csv"
        run_id = run_id_for_object(dataset, "cascade-landing", name, number + 1)
        trigger = Trigger(kind="object", uri=f"gs://cascade-landing/{name}", generation=number + 1)
    steps = {
        step: StepRecord(
            state="succeeded",
            attempts=1,
            started_at=created + timedelta(seconds=3 * position),
            finished_at=created + timedelta(seconds=3 * position + 2),
            duration_s=2.0,
            outputs={"files": 1},
        )
        for position, step in enumerate(STEPS)
    }
    return RunRecord(
        run_id=run_id,
        dataset=dataset,
        trigger=trigger,
        state=STATES[number % len(STATES)],  # type: ignore[arg-type]
        created_at=created,
        updated_at=created + timedelta(seconds=20),
        steps=steps,
    )


def seed(artifacts: ArtifactStore, runs: int) -> list[RunRecord]:
    records = [make_run(number) for number in range(runs)]

    def write(record: RunRecord) -> None:
        artifacts.create(RunPaths(record.run_id).record, record.model_dump_json(indent=2).encode())
        record_run_created(artifacts, record)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, records))
    return records


def timed(client: httpx.Client, path: str, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        answer = client.get(path)
        elapsed = time.perf_counter() - start
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:200]}")
        times.append(elapsed * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
        "repeats": repeats,
    }


def without_index(artifacts: ArtifactStore) -> float:
    """The newest 25 runs the way a page would find them without the index (ms)."""
    start = time.perf_counter()
    records = []
    for name in artifacts.list_names("runs/"):
        if name.endswith("/run.json"):
            found = artifacts.read_model(name, RunRecord)
            if found is not None:
                records.append(found[0])
    records.sort(key=lambda record: record.created_at, reverse=True)
    del records[25:]
    return (time.perf_counter() - start) * 1000


def later_page(client: httpx.Client, pages: int) -> str:
    token = None
    for _ in range(pages - 1):
        token = client.get("/api/runs", params={"page": token} if token else {}).json()["next"]
    return f"/runs?page={token}"


def measure(
    url: str, artifacts: ArtifactStore, records: list[RunRecord], repeats: int
) -> dict[str, Any]:
    newest = max(records, key=lambda record: record.created_at)
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/runs")  # warm: imports, templates, connections
        pages = {
            "runs, first page": "/runs",
            "runs, dataset page": "/datasets/churn",
            "runs, state=failed": "/runs?state=failed",
            "runs, trigger=request": "/runs?trigger=request",
            "runs, sixth page": later_page(client, 6),
            "api/runs (the poll)": "/api/runs",
            "run page": f"/runs/{newest.run_id}",
        }
        figures = {label: timed(client, path, repeats) for label, path in pages.items()}
    baseline = [without_index(artifacts) for _ in range(3)]
    figures["baseline: newest 25 without the index"] = {
        "median_ms": round(statistics.median(baseline), 1),
        "repeats": len(baseline),
    }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    options = parser.parse_args()
    with TemporaryDirectory(prefix="console-bench-") as work, ExitStack() as stack:
        backend_port, front_port = free_port(), free_port()
        gcs_url = f"http://127.0.0.1:{front_port}"
        log = stack.enter_context((Path(work) / "gcs.log").open("wb"))
        processes = [
            subprocess.Popen(
                [
                    str(fake_gcs_binary()),
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    str(backend_port),
                    "-backend",
                    "memory",
                    "-public-host",
                    f"127.0.0.1:{front_port}",
                    "-external-url",
                    gcs_url,
                    "-log-level",
                    "error",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cascade.localcloud.gcs_front",
                    "--port",
                    str(front_port),
                    "--backend",
                    f"http://127.0.0.1:{backend_port}",
                ],
                stderr=log,
            ),
        ]
        try:
            wait_ok(f"{gcs_url}/storage/v1/b")
            settings = Settings(storage_emulator_host=gcs_url, project="cascade-local")
            make_storage_client(settings).create_bucket(settings.artifacts_bucket)
            started = time.perf_counter()
            records = seed(console_config(settings, caller_of=CALLER).artifacts, options.runs)
            seeded_s = time.perf_counter() - started
            figures = {}
            backend_url = f"http://127.0.0.1:{backend_port}"
            for label, url in [
                ("fake-gcs-server", backend_url),
                ("through the GCS front", gcs_url),
            ]:
                reading = settings.model_copy(update={"storage_emulator_host": url})
                config = console_config(reading, caller_of=CALLER)
                with serving(create_app(config)) as console_url:
                    figures[label] = measure(
                        console_url, config.artifacts, records, options.repeats
                    )
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(10)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "runs": options.runs,
        "seed_s": round(seeded_s, 1),
        "pages": figures,
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "target": "median under 200 ms per page",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
