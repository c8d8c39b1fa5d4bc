"""Console dataset-page benchmark: median server time of the dataset pages with 1,000
accepted files and 40 quarantined ones, each page beside a baseline measured in the same
run on the same data.

    .venv/bin/python bench/console_datasets.py      # writes bench/results/console_datasets.json

The storage and the console are ``bench/console_pages.py``'s: fake-gcs-server (in
memory) behind the local cloud's GCS front, each page measured reading fake-gcs-server
directly and through the front, the console built as ``cascade console`` builds it (its
clients, and a step context for the quarantine's rows) and served by uvicorn on
127.0.0.1, one keep-alive client timing each request to its last byte.

Data (dataset ``credit`` unless named): one file per dataset landed in the landing
bucket and validated by the validate step itself (``handle_object_finalized``: the
dataset's schema, baseline, statistics, anomalies and manifest), then 40 drifted files
landed and validated the same way, which the step quarantines (its copy of the file,
its anomalies, the run's errors). Then 1,000 accepted files written as the validate step
writes them, each with its run (run.json and its index entries), its manifest
(``datasets/credit/accepted/<run>.json``) and its anomalies with the drift of three
features. The step's bus is the recording fake (nothing here publishes for real; the
pages publish nothing).

Pages and their baselines:

- the dataset page (the runs list, the schema, a page of 25 accepted files, 25
  quarantined runs with their findings, the serving plan) and its second files page;
  baseline: listing every manifest of the dataset and reading each (what showing the
  files without page tokens would cost); floor: what the first page's quarantined rows
  read (each run's record and review), without the page;
- the drift JSON the chart reads (200 files' manifests and anomalies); baseline:
  reading the 200 anomalies files the chart covers, one by one (the reads it cannot do
  without);
- the datasets index (one listing request per dataset); baseline: listing every name
  under ``datasets/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from google.protobuf import text_format

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from console_pages import (  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
    CALLER,
    DATASETS,
    REPO_ROOT,
    make_run,
    modes,
    running_storage,
    timed,
    timed_call,
    write_runs,
)

from cascade.console import create_app  # noqa: E402
from cascade.console.wiring import console_config  # noqa: E402
from cascade.core.clients import make_storage_client  # noqa: E402
from cascade.core.context import StepContext  # noqa: E402
from cascade.core.events import StorageObjectEvent  # noqa: E402
from cascade.core.fakes import RecordingBus  # noqa: E402
from cascade.core.paths import DatasetPaths, RunPaths  # noqa: E402
from cascade.core.runs import RunRecord, run_id_for_object  # noqa: E402
from cascade.core.settings import Settings  # noqa: E402
from cascade.core.store import ArtifactStore  # noqa: E402
from cascade.steps.quarantine_review import quarantined_run, read_review  # noqa: E402
from cascade.steps.validate import handle_object_finalized  # noqa: E402
from cascade.validation.manifest import AcceptedFile  # noqa: E402
from cascade.validation.tfmd import anomalies_pb2  # noqa: E402
from tests.console.datasets_builders import csv_rows  # noqa: E402
from tests.console.server import serving  # noqa: E402
from tests.unit.gcs_front_process import free_port  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "console_datasets.json"
DATASET = "credit"
DRIFT_FILES = 200
"""What the drift chart reads (``cascade.console.datasets.DRIFT_FILES``)."""
KS = anomalies_pb2.DriftSkewInfo.Measurement.UNKNOWN  # Cascade writes its KS statistic so
L_INFTY = anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY


def validated(ctx: StepContext, name: str, data: bytes) -> RunRecord:
    """``data`` landed as ``name`` and validated by the validate step; its run."""
    landing = ctx.landing_store()
    generation = landing.write(name, data, content_type="text/csv")
    if generation is None:
        raise RuntimeError(f"{name} was not written")
    event = StorageObjectEvent(
        event_id=f"bench-{name}-{generation}",
        bucket=ctx.settings.landing_bucket,
        name=name,
        generation=generation,
        size=len(data),
    )
    handle_object_finalized(ctx, event)
    dataset = name.split("/", 1)[0]
    run_id = run_id_for_object(dataset, ctx.settings.landing_bucket, name, generation)
    run = ctx.ledger.get(run_id)
    if run is None:
        raise RuntimeError(f"the validate step recorded no run for {name}")
    return run


def seed_validated(ctx: StepContext, quarantined: int) -> list[RunRecord]:
    """A first file for each dataset (accepted: the schema and baseline), then
    ``quarantined`` drifted files of ``credit`` (the step quarantines them)."""
    for number, dataset in enumerate(DATASETS):
        run = validated(ctx, f"{dataset}/base.csv", csv_rows(number + 1))
        if run.state == "rejected":
            raise RuntimeError(f"{dataset}/base.csv was not accepted: {run.error}")
    runs = [
        validated(
            ctx,
            f"{DATASET}/drifted-{number}.csv",
            csv_rows(number + 10, shift=15.0, cities=("a", "b", "z")),
        )
        for number in range(quarantined)
    ]
    kept = ctx.artifacts.list_names(f"quarantine/{DATASET}/")
    held = {name.split("/")[2] for name in kept}
    missing = [run.run_id for run in runs if run.run_id not in held]
    if missing:
        raise RuntimeError(f"{len(missing)} drifted file(s) were not quarantined: {missing[:3]}")
    return runs


def anomalies_of(number: int) -> bytes:
    """The drift of three features, as the validate step writes a file's anomalies."""
    anomalies = anomalies_pb2.Anomalies()
    for feature, kind, value in (
        ("amount", KS, 0.05 + number % 7 / 100),
        ("age", KS, 0.03 + number % 3 / 100),
        ("city", L_INFTY, 0.01 + number % 5 / 100),
    ):
        info = anomalies.drift_skew_info.add()
        info.path.step.append(feature)
        measurement = info.drift_measurements.add()
        measurement.type = kind
        measurement.value = value
        measurement.threshold = 0.1
    text: str = text_format.MessageToString(anomalies)
    return text.encode()


def seed_accepted(artifacts: ArtifactStore, files: int, schema_uri: str) -> list[RunRecord]:
    """``files`` accepted files of ``credit``: each run (run.json, index entries), its
    manifest and its anomalies."""
    numbers = [number for number in range(files * 5 // 4 + 5) if number % 5 != 4][:files]
    records = [make_run(number, DATASET) for number in numbers]  # object-triggered runs
    write_runs(artifacts, records)

    def write(record: RunRecord) -> None:
        trigger = record.trigger
        assert trigger.uri is not None
        assert trigger.generation is not None
        manifest = AcceptedFile(
            file_id=record.run_id,
            run_id=record.run_id,
            uri=trigger.uri,
            generation=trigger.generation,
            num_examples=400,
            stats_uri=artifacts.uri(f"{RunPaths(record.run_id).step_dir('validation')}/stats.pb"),
            schema_uri=schema_uri,
            accepted_at=record.created_at + timedelta(seconds=3),
            content_digest=f"sha256:{hashlib.sha256(trigger.uri.encode()).hexdigest()}",
        )
        folder = RunPaths(record.run_id).step_dir("validation")
        artifacts.write(
            f"{folder}/anomalies.pbtxt",
            anomalies_of(trigger.generation),
            content_type="text/plain",
        )
        artifacts.create(
            DatasetPaths(DATASET).accepted_manifest(record.run_id),
            manifest.model_dump_json(indent=2).encode(),
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, records))
    return records


# ------------------------------------------------------------------ baselines


def every_manifest(artifacts: ArtifactStore) -> None:
    """Every accepted file of the dataset: the listing, and each manifest read."""
    manifests = [
        found[0]
        for name in artifacts.list_names(DatasetPaths(DATASET).accepted_prefix)
        if name.endswith(".json")
        and (found := artifacts.read_model(name, AcceptedFile)) is not None
    ]
    manifests.sort(key=lambda manifest: manifest.accepted_at)


def chart_anomalies(artifacts: ArtifactStore, run_ids: list[str]) -> None:
    """The anomalies files the drift chart covers, read and parsed one by one."""
    for run_id in run_ids:
        stored = artifacts.read(f"{RunPaths(run_id).step_dir('validation')}/anomalies.pbtxt")
        assert stored is not None
        text_format.Parse(stored.data.decode(), anomalies_pb2.Anomalies())


def quarantine_rows(ctx: StepContext, run_ids: list[str]) -> None:
    """What the page's quarantined rows read, without the page: each run as the review
    code finds it (its record) and its review, if any."""
    for run_id in run_ids:
        found = quarantined_run(ctx, run_id)
        read_review(ctx, found.run.dataset, run_id)


def every_dataset_name(artifacts: ArtifactStore) -> None:
    """The dataset names found by listing every name under ``datasets/``."""
    sorted({name.split("/")[1] for name in artifacts.list_names("datasets/")})


# ------------------------------------------------------------------ pages


def next_link(html: str, anchor: str) -> str:
    found = re.search(rf'href="([^"]+)#{anchor}" id="{anchor}-next"', html)
    if found is None:
        raise RuntimeError(f"the dataset page shows no {anchor}-next link")
    return found.group(1).replace("&amp;", "&")


def measure(url: str, ctx: StepContext, repeats: int) -> dict[str, Any]:
    artifacts = ctx.artifacts
    listed = artifacts.list_names(DatasetPaths(DATASET).accepted_prefix)
    held = sorted({name.split("/")[2] for name in artifacts.list_names(f"quarantine/{DATASET}/")})
    covered = [name.rsplit("/", 1)[1].removesuffix(".json") for name in listed][:DRIFT_FILES]
    with httpx.Client(base_url=url, timeout=120) as client:
        first = client.get(f"/datasets/{DATASET}")  # warm: imports, templates, connections
        if first.status_code != 200:
            raise RuntimeError(f"/datasets/{DATASET}: {first.status_code} {first.text[:300]}")
        drift = client.get(f"/api/datasets/{DATASET}/drift", params={"feature": "amount"}).json()
        if drift["files"] != DRIFT_FILES or len(drift["points"]) < DRIFT_FILES - 1:
            # the first file of the dataset (validated against no baseline) has no drift
            raise RuntimeError(f"the drift JSON covers {drift['files']} files")
        pages = {
            "dataset page (25 files, 25 quarantined)": f"/datasets/{DATASET}",
            "dataset page, files page 2": next_link(first.text, "files"),
            "dataset page, quarantined page 2": next_link(first.text, "quarantined"),
            f"drift JSON ({DRIFT_FILES} files)": f"/api/datasets/{DATASET}/drift?feature=amount",
            f"datasets index ({len(DATASETS)} datasets)": "/datasets",
        }
        figures = {label: timed(client, path, repeats) for label, path in pages.items()}
    baselines = max(3, repeats // 3)
    figures["baseline: every manifest listed and read"] = timed_call(
        lambda: every_manifest(artifacts), 3
    )
    figures[f"floor: the first page's {min(25, len(held))} quarantined rows read, no page"] = (
        timed_call(lambda: quarantine_rows(ctx, held[:25]), baselines)
    )
    figures[f"baseline: the {DRIFT_FILES} anomalies files read"] = timed_call(
        lambda: chart_anomalies(artifacts, covered), baselines
    )
    figures["baseline: every name under datasets/ listed"] = timed_call(
        lambda: every_dataset_name(artifacts), baselines
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="accepted files of credit")
    parser.add_argument("--quarantined", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=30)
    options = parser.parse_args()
    figures: dict[str, dict[str, Any]] = {}
    seeded: dict[str, float] = {}
    with (
        TemporaryDirectory(prefix="console-datasets-bench-") as work,
        running_storage(Path(work)) as (backend_url, gcs_url),
    ):
        # No Pub/Sub here: the publisher is built (as `cascade console` builds it) and
        # never used; the seeding validate step publishes to the recording fake.
        settings = Settings(
            storage_emulator_host=gcs_url,
            pubsub_emulator_host=f"127.0.0.1:{free_port()}",
            project="cascade-local",
        )
        client = make_storage_client(settings)
        client.create_bucket(settings.artifacts_bucket)
        client.create_bucket(settings.landing_bucket)
        # Seeded past the front: the validate step rewrites its run's record and the
        # dataset's baseline, which the front's one write a second per object only slows.
        direct = settings.model_copy(update={"storage_emulator_host": backend_url})
        ctx = dataclasses.replace(StepContext.from_settings(direct), bus=RecordingBus())
        started = time.perf_counter()
        seed_validated(ctx, options.quarantined)
        seeded["validate_s"] = round(time.perf_counter() - started, 1)
        schema = ctx.artifacts.stat(DatasetPaths(DATASET).schema)
        assert schema is not None
        schema_uri = f"{ctx.artifacts.uri(DatasetPaths(DATASET).schema)}#{schema.generation}"
        started = time.perf_counter()
        seed_accepted(ctx.artifacts, options.files, schema_uri)
        seeded["accepted_s"] = round(time.perf_counter() - started, 1)
        for label, url in modes(backend_url, gcs_url):
            reading = settings.model_copy(update={"storage_emulator_host": url})
            config = console_config(reading, caller_of=CALLER)
            reviewing = StepContext.from_settings(reading)  # as `cascade console` builds it
            config.step_context = lambda reviewing=reviewing: reviewing
            with serving(create_app(config)) as console_url:
                figures[label] = measure(console_url, reviewing, options.repeats)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "accepted_files": options.files,
        "quarantined_files": options.quarantined,
        "validated_files": options.quarantined + len(DATASETS),
        "seed": seeded,
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
