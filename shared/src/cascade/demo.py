"""``cascade demo``: start the local cloud and follow a sample file through the chain."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import requests
from rich.console import Console
from rich.markup import escape

from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient, RunTimeoutError
from cascade.localcloud.settings import LocalCloudSettings
from cascade.paths import DatasetPaths
from cascade.pipeline_config import push_pipeline_config
from cascade.sample_data import SAMPLE_PIPELINE_CONFIG, sample_csv

__all__ = ["run_demo"]

DEMO_DATASET = "credit"


def _show_a_prediction(local: LocalCloudSettings, console: Console) -> None:
    """Ask the deployed model about one sample row, as a client of the endpoint would."""
    state = control.status(local)
    url = None if state is None else state.environment.get("CASCADE_DEPLOY_MODEL_SERVER_URL")
    if not url:
        return
    header, first_row = sample_csv(1, seed=99).decode().splitlines()[:2]
    instance: dict[str, object] = dict(zip(header.split(","), first_row.split(","), strict=True))
    instance.pop("defaulted")
    for numeric in (
        "age",
        "income",
        "loan_amount",
        "term_months",
        "credit_score",
        "num_late_payments",
    ):
        instance[numeric] = float(str(instance[numeric]))
    body = {"instances": [instance]}
    response = requests.post(f"{url}/v1/models/{DEMO_DATASET}:predict", json=body, timeout=30)
    console.print(f"POST {url}/v1/models/{DEMO_DATASET}:predict")
    console.print(json.dumps(body))
    console.print(f"-> HTTP {response.status_code} {response.text.strip()}")


def run_demo(local: LocalCloudSettings, *, rows: int, console: Console) -> int:
    """Returns the process exit code: 0 when the run finished successfully."""
    from cascade.cli import print_run

    started = time.perf_counter()
    with console.status("starting the local cloud (emulators, functions, router)…"):
        try:
            control.up(local)
        except (control.LocalCloudError, RuntimeError) as error:
            console.print(f"[red]could not start the local cloud:[/red] {escape(str(error))}")
            return 1
    console.print(f"local cloud ready in {time.perf_counter() - started:.1f}s")
    client = LocalCloudClient(local.runtime_settings())
    if client.artifacts.read(DatasetPaths(DEMO_DATASET).pipeline_config) is None:
        uri = push_pipeline_config(
            client.artifacts, DEMO_DATASET, SAMPLE_PIPELINE_CONFIG.encode(), where="sample config"
        )
        console.print(f"stored the sample pipeline config at {uri}")
    name = f"{DEMO_DATASET}/{datetime.now(UTC):%Y%m%dT%H%M%S%f}.csv"
    upload_started = time.perf_counter()
    generation = client.upload(name, sample_csv(rows))
    run_id = client.run_id_for(name, generation)
    console.print(f"uploaded {rows} rows to gs://{client.settings.landing_bucket}/{name}")
    console.print(f"following run [bold]{run_id}[/bold]")
    seen: set[str] = set()

    def progress(record: object) -> bool:
        from cascade.runs import RunRecord

        assert isinstance(record, RunRecord)
        for step, step_record in record.steps.items():
            key = f"{step}:{step_record.state}"
            if key not in seen and step_record.state != "running":
                seen.add(key)
                console.print(
                    f"  {step:<10} {step_record.state:<10} {step_record.duration_s or 0:.3f}s"
                )
        return record.state != "running"

    try:
        record = client.wait_for_run(run_id, until=progress, timeout=120)
    except RunTimeoutError as error:
        console.print(escape(str(error)), style="red")
        return 1
    print_run(record)
    console.print(f"upload to finished run: {time.perf_counter() - upload_started:.2f}s")
    if record.state == "succeeded":
        _show_a_prediction(local, console)
    console.print(
        "next: `cascade status`, `cascade run <run id>`, logs in .cascade/logs/, "
        "`cascade down` to stop"
    )
    return 0 if record.state == "succeeded" else 1
