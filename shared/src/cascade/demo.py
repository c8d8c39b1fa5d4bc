"""``cascade demo``: start the local cloud and follow a sample file through the chain."""

from __future__ import annotations

import time
from datetime import UTC, datetime

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
    console.print(
        "next: `cascade status`, `cascade run <run id>`, logs in .cascade/logs/, "
        "`cascade down` to stop"
    )
    return 0 if record.state == "succeeded" else 1
