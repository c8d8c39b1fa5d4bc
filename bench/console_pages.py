"""Console page-load benchmark: median server time per page with 1,000 runs in the
artifacts bucket, each page beside a baseline measured in the same run on the same data.

    .venv/bin/python bench/console_pages.py               # bench/results/console_pages.json
    .venv/bin/python bench/console_pages.py --pages runs  # one set of pages (shorter)

fake-gcs-server (in memory) behind the local cloud's GCS front, as the local cloud runs
them. Each page is measured twice on the same data: the console reading fake-gcs-server
directly (the storage's own cost) and through the front (what ``cascade console`` sees
locally: the front, a Python reverse proxy modelling Cloud Storage's write limit, adds
its own time to every request). The console (``cascade.console.create_app`` with the
clients ``cascade console`` builds) is served by uvicorn on 127.0.0.1; one keep-alive
client on loopback times each request to its last byte. 1,000 runs over 5 datasets
(mixed states and triggers), each with its run.json (six steps) and its index entries,
written as the steps write them: the two of every run and its ``running`` state's two
when the run is created, its end state's two when it ends (``record_run_state``).

Page sets (``--pages``, default both):

- ``runs``: the runs list (first page, a dataset's page, state filters: ``failed``,
  ``running`` (whose entries every run keeps), a dataset with a state; a trigger filter,
  the sixth page through page tokens), the JSON the list polls, and a run's page
  (the run report's collection of its artifacts). Baseline: what a page would cost
  without the index, listing ``runs/`` and reading every run.json to sort them.
- ``models``: 10 model versions deployed for each dataset (``serving.json`` written by the
  deployers' traffic code, each version's evaluation and transform spec; builders from
  ``tests.console.models_builders``) and 100 dead letters as the dead-letter recorder
  keeps and indexes them: ``/models``, a dataset's models page, ``/alerts`` (a page of
  dead letters newest first from their index, and the newest failed and rejected runs
  from the state entries) and its second page, and a run's page
  with the force-bless block. Baselines: the same objects the models pages show, read
  one by one through the store without rendering a page (the storage floor); every dead
  letter read (10 at a time, as the page reads) to show the newest 25; the run page of a
  run with no evaluation (the block's own cost).

``bench/console_datasets.py`` times the dataset pages.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
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
from cascade.core.dead_letter_index import index_dead_letter  # noqa: E402
from cascade.core.paths import DatasetPaths, RunPaths, dead_letter_record  # noqa: E402
from cascade.core.run_index import (  # noqa: E402
    READ_WORKERS,
    record_run_created,
    record_run_state,
)
from cascade.core.runs import (  # noqa: E402
    RunRecord,
    StepRecord,
    Trigger,
    run_id_for_object,
    run_id_for_request,
)
from cascade.core.settings import Settings  # noqa: E402
from cascade.core.store import ArtifactStore  # noqa: E402
from cascade.evaluation.record import evaluation_path  # noqa: E402
from cascade.localcloud.components import fake_gcs_binary  # noqa: E402
from cascade.steps.dead_letter import DeadLetter  # noqa: E402
from cascade.transform.catalog import transform_spec_name  # noqa: E402
from tests.console.models_builders import deploy, evaluation  # noqa: E402
from tests.console.server import serving  # noqa: E402
from tests.unit.gcs_front_process import free_port, wait_ok  # noqa: E402

CALLER = lambda request: Caller("bench@local")  # noqa: E731
RESULTS = REPO_ROOT / "bench" / "results" / "console_pages.json"
DATASETS = ["credit", "churn", "fraud", "demand", "returns"]
STATES = ["succeeded"] * 14 + ["rejected"] * 3 + ["failed"] * 2 + ["running"]
STEPS = ["validate", "transform", "train", "training_job", "evaluate", "deploy"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)
PAGE_SETS = ("runs", "models")
VERSIONS = 10
"""Model versions deployed per dataset (the models set)."""
DEAD_LETTERS = 100


def make_run(number: int, dataset: str | None = None) -> RunRecord:
    """Run ``number`` of the seed (its dataset from the number unless given)."""
    dataset = dataset or DATASETS[number % len(DATASETS)]
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
        state=STATES[number % len(STATES)],  # type: ignore[arg-type,unused-ignore]
        created_at=created,
        updated_at=created + timedelta(seconds=20),
        steps=steps,
    )


def write_runs(artifacts: ArtifactStore, records: list[RunRecord]) -> None:
    """Each run's run.json and its index entries, as the steps write them: created
    running (its entries and its ``running`` ones), then its end state's entries."""

    def write(record: RunRecord) -> None:
        artifacts.create(RunPaths(record.run_id).record, record.model_dump_json(indent=2).encode())
        record_run_created(artifacts, record.model_copy(update={"state": "running"}))
        if record.state != "running":
            record_run_state(artifacts, record)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, records))


def seed(artifacts: ArtifactStore, runs: int) -> list[RunRecord]:
    records = [make_run(number) for number in range(runs)]
    write_runs(artifacts, records)
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
        "p95_ms": round(times[math.ceil(len(times) * 0.95) - 1], 1),  # nearest rank
        "repeats": repeats,
    }


def timed_call(work: Callable[[], object], repeats: int) -> dict[str, float]:
    """A baseline: ``work`` (direct store calls, no page) run ``repeats`` times (ms)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "repeats": repeats}


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


def measure_runs(
    url: str, artifacts: ArtifactStore, records: list[RunRecord], repeats: int
) -> dict[str, Any]:
    newest = max(records, key=lambda record: record.created_at)
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/runs")  # warm: imports, templates, connections
        pages = {
            "runs, first page": "/runs",
            "runs, dataset page": "/datasets/churn",
            "runs, state=failed": "/runs?state=failed",
            "runs, dataset=churn&state=rejected": "/runs?dataset=churn&state=rejected",
            "runs, state=running": "/runs?state=running",
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


# ------------------------------------------------------------------ models and alerts


@dataclass
class _Deployed:
    """What ``tests.console.models_builders.deploy`` needs of a console: its store."""

    artifacts: ArtifactStore


@dataclass
class ModelsSeed:
    blessable: str
    """A rejected run whose evaluation did not bless it: its page shows the force-bless form."""
    plain: str
    """A run with no evaluation: its page has no force-bless block."""


def seed_models(artifacts: ArtifactStore, records: list[RunRecord]) -> ModelsSeed:
    """``VERSIONS`` versions per dataset (the newest runs of each, each deployment promoted
    over the last, as the deployers' traffic code writes ``serving.json``), a not-blessed
    evaluation of an older rejected run, and ``DEAD_LETTERS`` dead letters."""
    deployed: set[str] = set()

    def deploy_dataset(dataset: str) -> None:
        runs = [record for record in records if record.dataset == dataset][-VERSIONS:]
        for number, run in enumerate(runs):
            files = [f"{dataset}/day-{n}.csv" for n in range(number + 1)]
            deploy(_Deployed(artifacts), run, files)  # type: ignore[arg-type]
            deployed.add(run.run_id)

    with ThreadPoolExecutor(len(DATASETS)) as pool:
        list(pool.map(deploy_dataset, DATASETS))
    older = [record for record in records if record.run_id not in deployed]
    rejected = next(record for record in reversed(older) if record.state == "rejected")
    artifacts.write_json(evaluation_path(rejected.run_id), evaluation(rejected, "not_blessed"))
    plain = next(record for record in reversed(older) if record.run_id != rejected.run_id).run_id
    victim = records[0].run_id
    letters = [
        DeadLetter(
            message_id=str(1000 + number),
            source_subscription="projects/cascade-local/subscriptions/cascade-validate",
            delivery_attempts=5,
            last_error="validate: timeout",
            message_type="object_finalize",
            dataset="credit",
            run_id=victim,
            attributes={"bucketId": "cascade-landing", "objectId": f"credit/late-{number}.csv"},
            data=json.dumps({"bucket": "cascade-landing", "name": f"credit/late-{number}.csv"}),
            recorded_at=T0 + timedelta(minutes=number),
        )
        for number in range(DEAD_LETTERS)
    ]

    def record(letter: DeadLetter) -> None:
        """As the recorder keeps a letter: its record, then its index entry."""
        artifacts.create(
            dead_letter_record(letter.message_id), letter.model_dump_json(indent=2).encode()
        )
        index_dead_letter(artifacts, letter.message_id, letter.recorded_at)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(record, letters))
    return ModelsSeed(blessable=rejected.run_id, plain=plain)


def models_floor(artifacts: ArtifactStore, dataset: str) -> None:
    """The objects a dataset's models page shows, read one by one (no page): its
    ``serving.json``, then each version's evaluation and transform spec."""
    found = artifacts.read(DatasetPaths(dataset).serving)
    assert found is not None
    for run_id in {version["run_id"] for version in json.loads(found.data)["versions"]}:
        artifacts.read(evaluation_path(run_id))
        artifacts.read(transform_spec_name(run_id))


def models_index_floor(artifacts: ArtifactStore) -> None:
    """What ``/models`` reads, without the page: the listing of ``models/`` and each
    ``serving.json``."""
    for name in artifacts.list_names("models/"):
        if name.endswith("/serving.json"):
            artifacts.read(name)


def every_dead_letter(artifacts: ArtifactStore) -> None:
    """The newest 25 dead letters found by reading them all (10 at a time, as the page
    reads its 25): what a page sorted by time over every letter would cost."""
    names = list(artifacts.list_names("dead-letters/"))
    with ThreadPoolExecutor(READ_WORKERS) as pool:
        letters = [
            DeadLetter.model_validate_json(stored.data)
            for stored in pool.map(artifacts.read, names)
            if stored is not None
        ]
    letters.sort(key=lambda letter: letter.recorded_at, reverse=True)
    del letters[25:]


def measure_models(
    url: str, artifacts: ArtifactStore, seeded: ModelsSeed, repeats: int
) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/models")  # warm
        alerts = client.get("/alerts").text
        found = re.search(r'href="/alerts\?page=([A-Za-z0-9_-]+)"', alerts)
        if found is None:
            raise RuntimeError("/alerts shows no link to its second page")
        bless = client.get(f"/runs/{seeded.blessable}").text
        if f"/runs/{seeded.blessable}/bless" not in bless:
            raise RuntimeError("the rejected run's page shows no force-bless form")
        pages = {
            "models list (5 datasets)": "/models",
            f"a dataset's models ({VERSIONS} versions)": "/models/credit",
            "alerts (25 dead letters, newest 10 failed and 10 rejected runs)": "/alerts",
            "alerts, second page (dead letters only)": f"/alerts?page={found.group(1)}",
            "run page with the force-bless block": f"/runs/{seeded.blessable}",
            "baseline: run page, no evaluation": f"/runs/{seeded.plain}",
        }
        figures = {label: timed(client, path, repeats) for label, path in pages.items()}
    baselines = max(3, repeats // 3)
    figures["floor: /models reads, no page"] = timed_call(
        lambda: models_index_floor(artifacts), baselines
    )
    figures[f"floor: the models page's {1 + 2 * VERSIONS} reads, no page"] = timed_call(
        lambda: models_floor(artifacts, "credit"), baselines
    )
    figures[f"baseline: newest 25 of all {DEAD_LETTERS} dead letters"] = timed_call(
        lambda: every_dead_letter(artifacts), baselines
    )
    return figures


# ------------------------------------------------------------------ storage


@contextmanager
def running_storage(work: Path) -> Iterator[tuple[str, str]]:
    """fake-gcs-server (memory) behind the GCS front; yields (backend URL, front URL)."""
    backend_port, front_port = free_port(), free_port()
    gcs_url = f"http://127.0.0.1:{front_port}"
    with ExitStack() as stack:
        log = stack.enter_context((work / "gcs.log").open("wb"))
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
            yield f"http://127.0.0.1:{backend_port}", gcs_url
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(10)


def modes(backend_url: str, front_url: str) -> list[tuple[str, str]]:
    return [("fake-gcs-server", backend_url), ("through the GCS front", front_url)]


def page_sets(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(PAGE_SETS))
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(
            f"--pages: a comma-separated subset of {','.join(PAGE_SETS)} (got {text!r})"
        )
    return [name for name in PAGE_SETS if name in chosen]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--pages", type=page_sets, default=list(PAGE_SETS), help="runs,models (default both)"
    )
    options = parser.parse_args()
    sets: list[str] = options.pages
    figures: dict[str, dict[str, Any]] = {}
    with (
        TemporaryDirectory(prefix="console-bench-") as work,
        running_storage(Path(work)) as (backend_url, gcs_url),
    ):
        settings = Settings(storage_emulator_host=gcs_url, project="cascade-local")
        make_storage_client(settings).create_bucket(settings.artifacts_bucket)
        started = time.perf_counter()
        records = seed(console_config(settings, caller_of=CALLER).artifacts, options.runs)
        seeded_s = time.perf_counter() - started
        models_seed = None
        if "models" in sets:
            # serving.json is rewritten once per deployment: written past the front, whose
            # one-write-a-second-per-object limit would only slow the seed
            direct = settings.model_copy(update={"storage_emulator_host": backend_url})
            started = time.perf_counter()
            models_seed = seed_models(console_config(direct, caller_of=CALLER).artifacts, records)
            seeded_s += time.perf_counter() - started
        for label, url in modes(backend_url, gcs_url):
            reading = settings.model_copy(update={"storage_emulator_host": url})
            config = console_config(reading, caller_of=CALLER)
            figures[label] = {}
            with serving(create_app(config)) as console_url:
                if "runs" in sets:
                    figures[label] |= measure_runs(
                        console_url, config.artifacts, records, options.repeats
                    )
                if models_seed is not None:
                    figures[label] |= measure_models(
                        console_url, config.artifacts, models_seed, options.repeats
                    )
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "runs": options.runs,
        "page_sets": sets,
        "model_versions_per_dataset": VERSIONS if "models" in sets else 0,
        "dead_letters": DEAD_LETTERS if "models" in sets else 0,
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
